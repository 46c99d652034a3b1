"""The ``Ledger`` facade's account methods: accounts, tier changes, API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from pricing.errors import InvalidOperation

from . import accounts, convert, keys, queries, tier_changes
from .arguments import aware, external_text, nonnegative
from .service_money import MoneyService
from .tables import ApiKeyRow
from .types import Account, ApiKey, IssuedKey

TIER_CHANGE_BATCH = 500


class AccountsService(MoneyService):
    """Accounts, their tier changes and their API keys."""

    # -- accounts -------------------------------------------------------------

    def open_account(
        self,
        kind: str,
        external_id: str,
        *,
        tier: str,
        overdraft_limit: int = 0,
        welcome_micro: int = 0,
        period_anchor: datetime | None = None,
        byok: bool = False,
    ) -> Account:
        """Get or create the account ``(kind, external_id)``; safe to call concurrently.

        An existing account is returned as it is (its tier, anchor and BYOK mode are not
        changed). The welcome grant is keyed ``welcome:{kind}:{external_id}``, so an
        account gets it once. ``period_anchor`` (default: now) starts its billing periods.
        """
        accounts.check_kind(kind)
        if not external_id:
            raise InvalidOperation("an account needs a non-empty external id")
        external_text("external_id", external_id)
        nonnegative("overdraft_limit", overdraft_limit)
        nonnegative("welcome_micro", welcome_micro)
        if period_anchor is not None:
            aware(period_anchor)
        now = self._clock()
        with self._uow() as session:
            row = accounts.find(session, kind, external_id)
            account = convert.account(row) if row is not None else None
        if account is None:
            try:
                with self._uow() as session:
                    row = accounts.create(
                        session,
                        kind,
                        external_id,
                        tier=tier,
                        overdraft_limit=overdraft_limit,
                        now=now,
                        period_anchor=period_anchor,
                        byok=byok,
                    )
                    account = convert.account(row)
            except IntegrityError:
                # Another caller created it between our read and our insert.
                found = self.find_account(kind, external_id)
                if found is None:
                    raise
                account = found
        if welcome_micro > 0:
            self.grant(
                account.id,
                welcome_micro,
                source="welcome",
                external_ref=f"welcome:{kind}:{external_id}",
                reason="welcome grant",
            )
            account = self.get_account(account.id)
        return account

    def find_account(self, kind: str, external_id: str) -> Account | None:
        external_text("external_id", external_id)
        with self._uow() as session:
            row = accounts.find(session, kind, external_id)
            return convert.account(row) if row is not None else None

    def get_account(self, account_id: int) -> Account:
        with self._uow() as session:
            return convert.account(accounts.get(session, account_id))

    def set_tier(self, account_id: int, tier: str) -> Account:
        if not tier:
            raise InvalidOperation("tier must be non-empty")
        return self._update_account(account_id, tier=tier)

    def set_status(self, account_id: int, status: str) -> Account:
        accounts.check_status(status)
        return self._update_account(account_id, status=status)

    def set_overdraft_limit(self, account_id: int, overdraft_limit: int) -> Account:
        nonnegative("overdraft_limit", overdraft_limit)
        return self._update_account(account_id, overdraft_limit=overdraft_limit)

    def set_byok(self, account_id: int, byok: bool) -> Account:
        """Switch the account's bring-your-own-key mode."""
        return self._update_account(account_id, byok=bool(byok))

    def set_period_anchor(self, account_id: int, period_anchor: datetime) -> Account:
        """Move the start of the account's billing periods (a new subscription, say)."""
        aware(period_anchor)
        return self._update_account(account_id, period_anchor=period_anchor)

    def _update_account(self, account_id: int, **fields: Any) -> Account:
        with self._uow() as session:
            row = accounts.lock(session, account_id)
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = self._clock()
            session.flush()
            return convert.account(row)

    def list_accounts(
        self, status: str | None = "active", after_id: int = 0, limit: int = 500
    ) -> list[Account]:
        """One page of accounts in id order: pass the last id seen as ``after_id`` for the next.

        ``status=None`` lists every status.
        """
        if status is not None:
            accounts.check_status(status)
        if limit <= 0:
            raise InvalidOperation(f"limit must be > 0, got {limit!r}")
        with self._uow() as session:
            return queries.list_accounts(session, status=status, after_id=after_id, limit=limit)

    # -- tier changes ---------------------------------------------------------

    def change_tier(
        self,
        account_id: int,
        new_tier: str,
        *,
        prorated_micro: int = 0,
        reference: str,
        reason: str = "",
    ) -> Account:
        """Set the tier now and, when ``prorated_micro`` > 0, grant it (source ``proration``).

        One transaction. The grant's ``external_ref`` is ``reference``: a repeat returns the
        account unchanged. A change now cancels any scheduled change.
        """
        if not new_tier:
            raise InvalidOperation("tier must be non-empty")
        if not reference:
            raise InvalidOperation("a tier change needs a reference (it is its idempotency key)")
        nonnegative("prorated_micro", prorated_micro)
        try:
            with self._uow() as session:
                row = accounts.lock(session, account_id)
                tier_changes.change(
                    session,
                    row,
                    new_tier,
                    prorated_micro=prorated_micro,
                    reference=reference,
                    reason=reason,
                    now=self._clock(),
                )
                return convert.account(row)
        except IntegrityError:
            if prorated_micro == 0 or self._grant_by_ref(reference, account_id) is None:
                raise
            return self.get_account(account_id)

    def schedule_tier_change(self, account_id: int, new_tier: str, effective_at: datetime) -> Account:
        """Change the tier at ``effective_at`` (``apply_due_tier_changes`` does it); replaces any earlier plan."""
        if not new_tier:
            raise InvalidOperation("tier must be non-empty")
        aware(effective_at)
        with self._uow() as session:
            row = accounts.lock(session, account_id)
            tier_changes.schedule(session, row, new_tier, effective_at)
            return convert.account(row)

    def cancel_tier_change(self, account_id: int) -> Account:
        with self._uow() as session:
            row = accounts.lock(session, account_id)
            tier_changes.schedule(session, row, None, None)
            return convert.account(row)

    def apply_due_tier_changes(self, now: datetime | None = None) -> int:
        """Apply every scheduled tier change due at ``now``; returns how many accounts changed."""
        at = aware(now) if now is not None else self._clock()
        return self._each_due(
            lambda session: tier_changes.due_ids(session, at, TIER_CHANGE_BATCH),
            lambda session, account_id: tier_changes.apply_due(
                session, accounts.lock(session, account_id), at
            ),
            TIER_CHANGE_BATCH,
        )

    # -- keys -----------------------------------------------------------------

    def issue_key(
        self,
        account_id: int,
        *,
        user_id: str | None = None,
        team_id: str | None = None,
        alias: str | None = None,
        byok: bool = False,
    ) -> IssuedKey:
        """A new ``sk-cr-…`` key for the account. The plaintext is in the result only."""
        plaintext = keys.new_plaintext()
        with self._uow() as session:
            accounts.get(session, account_id)
            row = keys.create(
                session,
                account_id,
                plaintext,
                user_id=user_id,
                team_id=team_id,
                alias=alias,
                now=self._clock(),
                byok=byok,
            )
            return IssuedKey(plaintext=plaintext, key=convert.api_key(row))

    def lookup_key(self, plaintext: str) -> ApiKey | None:
        """The live (not revoked) key with this plaintext, or None."""
        return self.get_key_by_hash(keys.hash_key(plaintext))

    def get_key_by_hash(self, key_hash: str) -> ApiKey | None:
        """The live (not revoked) key with this sha256 hex hash, or None."""
        with self._uow() as session:
            row = keys.by_hash(session, key_hash)
            if row is None or row.revoked_at is not None:
                return None
            return convert.api_key(row)

    def list_keys(self, account_id: int) -> list[ApiKey]:
        with self._uow() as session:
            accounts.get(session, account_id)
            stmt = select(ApiKeyRow).where(ApiKeyRow.account_id == account_id).order_by(ApiKeyRow.id)
            return [convert.api_key(row) for row in session.scalars(stmt)]

    def set_key_byok(self, key_id: int, byok: bool) -> ApiKey:
        with self._uow() as session:
            row = session.get(ApiKeyRow, key_id, with_for_update=True)
            if row is None:
                raise InvalidOperation(f"no API key with id {key_id}")
            row.byok = bool(byok)
            session.flush()
            return convert.api_key(row)

    def revoke_key(self, key_id: int) -> bool:
        """Revoke a key by id; False when it was already revoked."""
        with self._uow() as session:
            row = session.get(ApiKeyRow, key_id, with_for_update=True)
            if row is None:
                raise InvalidOperation(f"no API key with id {key_id}")
            if row.revoked_at is not None:
                return False
            row.revoked_at = self._clock()
            return True
