"""The one place where a ``CreditsError`` becomes an HTTP answer.

Bodies are OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``)
so every OpenAI client surfaces them; the message says what to do next.
"""

from __future__ import annotations

from litellm.proxy._types import ProxyException

from pricing.errors import (
    AccountInactive,
    BillingUnavailable,
    ByokNotAllowed,
    CreditsError,
    InsufficientCredits,
    MalformedRequest,
    MaxTokensExceeded,
    ModelNotAllowed,
    QuotaExceeded,
    UnknownAccount,
)

# most specific class first: the first isinstance match decides
_STATUS: tuple[tuple[type[CreditsError], int], ...] = (
    (InsufficientCredits, 402),
    (AccountInactive, 402),
    (ModelNotAllowed, 403),
    (ByokNotAllowed, 403),
    (UnknownAccount, 403),
    (QuotaExceeded, 429),
    (MaxTokensExceeded, 400),
    (MalformedRequest, 400),
    (BillingUnavailable, 503),
)


def status_for(error: CreditsError) -> int:
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500


def headers_for(error: CreditsError) -> dict[str, str]:
    if isinstance(error, QuotaExceeded):
        return {"Retry-After": str(error.retry_after_seconds())}
    if isinstance(error, BillingUnavailable):
        return {"Retry-After": "5"}
    return {}


def internal_error() -> ProxyException:
    """For an error we did not expect: the details go to the log, never to the client."""
    return ProxyException(
        message="Billing could not process this request; it was not served or charged. Retry, or contact support.",
        type="billing_error",
        param=None,
        code=500,
    )


def to_proxy_exception(error: CreditsError) -> ProxyException:
    """What the pre-call hook raises: LiteLLM turns it into the HTTP response as is."""
    return ProxyException(
        message=str(error),
        type=error.code,
        param=None,
        code=status_for(error),
        headers=headers_for(error),
    )
