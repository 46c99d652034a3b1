"""The one exception tree of litellm-credits.

Every error the product raises on purpose is a ``CreditsError``. Each carries a
stable ``code`` (the OpenAI-style ``type`` a client sees) and a ``hint`` that
says what to do next. The tree lives here, in the domain layer, because
``pricing`` is the package every other layer may import; the mapping of these
classes to HTTP statuses lives in exactly one place:
``credit_hooks.http_errors``.

    CreditsError
    ├── ConfigError                 bad settings or catalog (operator's input)
    │   ├── SettingsError
    │   ├── CatalogError
    │   ├── UnknownTier             an account names a tier the catalog lacks
    │   └── UnknownModelPrice       no rates for a model (LiteLLM nor catalog)
    ├── RequestRejected             the call may not go ahead (end user's side)
    │   ├── ModelNotAllowed         403 model_not_allowed
    │   ├── MaxTokensExceeded       400 max_tokens_exceeded
    │   ├── MalformedRequest        400 invalid_request_error (before anything is held)
    │   ├── QuotaExceeded           429 quota_exceeded (+ Retry-After)
    │   ├── InsufficientCredits     402 insufficient_quota
    │   ├── AccountInactive         402 account_inactive
    │   ├── UnknownAccount          403 unknown_account
    │   └── ByokNotAllowed          403 byok_not_allowed
    └── LedgerError                 the book of record could not do it
        ├── BillingUnavailable      503 billing_unavailable
        ├── HoldNotFound
        ├── AccountNotFound
        └── InvalidOperation        a ledger call that breaks a rule (bad amount, ...)
"""

from __future__ import annotations

from datetime import UTC, datetime


class CreditsError(Exception):
    """Root of every error raised on purpose by litellm-credits."""

    code: str = "credits_error"

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


# -- operator input ---------------------------------------------------------


class ConfigError(CreditsError):
    code = "config_error"


class SettingsError(ConfigError):
    """A setting (environment variable or settings file) is wrong."""

    code = "settings_error"

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"setting {setting}: {reason}")
        self.setting = setting
        self.reason = reason


class CatalogError(ConfigError):
    """The pricing catalog is invalid: names the file, the place inside it and why."""

    code = "catalog_error"

    def __init__(self, file: str, location: str, reason: str, line: int | None = None) -> None:
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {location}: {reason}")
        self.file = file
        self.location = location
        self.reason = reason
        self.line = line


class UnknownTier(ConfigError):
    """A tier code (usually an account's) that the loaded catalog does not define."""

    code = "unknown_tier"

    def __init__(self, tier: str, known: tuple[str, ...] = ()) -> None:
        listed = ", ".join(known) if known else "none"
        super().__init__(
            f"The pricing catalog has no tier '{tier}'.",
            hint=f"Defined tiers: {listed}. Move the account to one of them or add the tier to the catalog.",
        )
        self.tier = tier
        self.known = known


class UnknownModelPrice(ConfigError):
    """Neither LiteLLM's cost map nor the catalog's ``models:`` section prices a model."""

    code = "unknown_model_price"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"No price is known for the model '{model}'.",
            hint="Add it under 'models:' in the pricing catalog with input_per_1m and output_per_1m.",
        )
        self.model = model


# -- the call may not go ahead ------------------------------------------------


class RequestRejected(CreditsError):
    code = "request_rejected"


class ModelNotAllowed(RequestRejected):
    code = "model_not_allowed"

    def __init__(self, tier: str, model: str) -> None:
        super().__init__(
            f"Your plan ({tier}) does not include the model '{model}'.",
            hint="Use a model your plan includes (GET /credits/prices lists them) or upgrade your plan.",
        )
        self.tier = tier
        self.model = model


class MaxTokensExceeded(RequestRejected):
    code = "max_tokens_exceeded"

    def __init__(self, tier: str, requested: int, limit: int) -> None:
        super().__init__(
            f"This request asks for up to {requested} tokens; your plan ({tier}) allows {limit} per request.",
            hint=f"Lower max_tokens to {limit} or less, or upgrade your plan.",
        )
        self.tier = tier
        self.requested = requested
        self.limit = limit


class MalformedRequest(RequestRejected):
    """A request the proxy cannot serve, refused before anything is held or written."""

    code = "invalid_request_error"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"Invalid request: {field}: {reason}.", hint="Fix the request and send it again.")
        self.field = field
        self.reason = reason


class QuotaExceeded(RequestRejected):
    code = "quota_exceeded"

    def __init__(self, what: str, limit: int, resets_at: datetime) -> None:
        stamp = resets_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        super().__init__(
            f"Quota used up: {what} (limit {limit}).",
            hint=f"It resets at {stamp}; retry then or upgrade your plan.",
        )
        self.what = what
        self.limit = limit
        self.resets_at = resets_at

    def retry_after_seconds(self, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        return max(1, int((self.resets_at - now).total_seconds() + 0.999))


class InsufficientCredits(RequestRejected):
    code = "insufficient_quota"

    def __init__(self, account: str, needed_credits: str, available_credits: str) -> None:
        super().__init__(
            f"Not enough credits: this call may cost up to {needed_credits} credits "
            f"and account {account} has {available_credits} available.",
            hint="Buy credits or lower max_tokens, then retry.",
        )
        self.account = account
        self.needed_credits = needed_credits
        self.available_credits = available_credits


class AccountInactive(RequestRejected):
    code = "account_inactive"

    def __init__(self, account: str, status: str) -> None:
        super().__init__(
            f"Account {account} is {status}.",
            hint="Settle the open invoice or contact support to reactivate it.",
        )
        self.account = account
        self.status = status


class UnknownAccount(RequestRejected):
    code = "unknown_account"

    def __init__(self, identity: str) -> None:
        super().__init__(
            f"No billing account exists for {identity}.",
            hint="Ask the operator to create an account for you.",
        )
        self.identity = identity


# -- the book of record -------------------------------------------------------


class LedgerError(CreditsError):
    code = "ledger_error"


class BillingUnavailable(LedgerError):
    code = "billing_unavailable"

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"Billing is unavailable: {reason}.",
            hint="No call is served unpaid; retry in a few seconds.",
        )
        self.reason = reason


class HoldNotFound(LedgerError):
    code = "hold_not_found"

    def __init__(self, hold_id: str) -> None:
        super().__init__(f"No hold with id {hold_id}.")
        self.hold_id = hold_id


class AccountNotFound(LedgerError):
    code = "account_not_found"

    def __init__(self, account: str) -> None:
        super().__init__(f"No account {account}.")
        self.account = account


class InvalidOperation(LedgerError):
    code = "invalid_operation"


class ByokNotAllowed(RequestRejected):
    """A bring-your-own-key call the plan or the catalog's BYOK rules do not cover (403)."""

    code = "byok_not_allowed"

    def __init__(self, tier: str, provider: str | None, *, reason: str = "plan") -> None:
        if reason == "plan":
            message = f"Your plan ({tier}) does not allow calls with your own provider key."
            hint = "Call without your own key (the call is then charged in credits) or upgrade your plan."
        else:
            message = f"Calls with your own key to provider '{provider or 'unknown'}' are not offered on your plan ({tier})."
            hint = "Call without your own key, or use a provider your plan offers for your own keys."
        super().__init__(message, hint=hint)
        self.tier = tier
        self.provider = provider
        self.reason = reason
