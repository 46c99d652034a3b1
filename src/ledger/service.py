"""``Ledger``: the facade every other package uses. One transaction per method."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from pricing.errors import HoldNotFound, InvalidOperation

from . import accounts, audit, convert, grants, holds, keys, queries
from .engine import UnitOfWork, make_engine
from .tables import ApiKeyRow, GrantRow, HoldRow, metadata
from .types import (
    Account,
    ApiKey,
    Balance,
    Entry,
    Grant,
    Hold,
    IssuedKey,
    Settlement,
    UsageEvent,
    UsageRecord,
)

STALE_BATCH = 500


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise InvalidOperation("naive datetime given to the ledger; pass a timezone-aware one")
    return now


def _nonnegative(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidOperation(f"{name} must be a whole number of micro-credits >= 0, got {value!r}")


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidOperation(f"{name} must be a whole number of micro-credits > 0, got {value!r}")


class Ledger:
    """The book of record: accounts, keys, grants, holds, charges and usage.

    Synchronous and thread-safe (one pooled connection per call); async code calls it
    through ``asyncio.to_thread``. Database outages surface as ``BillingUnavailable``.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int = 5,
        pool_timeout: float = 10.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._engine = make_engine(
            url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout
        )
        self._uow = UnitOfWork(self._engine)
        self._clock = clock or (lambda: datetime.now(UTC))

    # -- lifecycle ------------------------------------------------------------

    @property
    def url(self) -> str:
        """The database URL with any password masked: safe for logs."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def create_schema(self) -> None:
        """Create missing tables (tests, demos); live databases use ``ledger.migrate.upgrade``."""
        with self._uow() as session:
            metadata.create_all(session.connection())

    def dispose(self) -> None:
        self._engine.dispose()

    def __repr__(self) -> str:
        return f"Ledger({self.url!r})"

    # -- accounts -------------------------------------------------------------

    def open_account(
        self,
        kind: str,
        external_id: str,
        *,
        tier: str,
        overdraft_limit: int = 0,
        welcome_micro: int = 0,
    ) -> Account:
        """Get or create the account ``(kind, external_id)``; safe to call concurrently.

        An existing account is returned as it is (its tier is not changed). The welcome
        grant is keyed ``welcome:{kind}:{external_id}``, so an account gets it once.
        """
        accounts.check_kind(kind)
        if not external_id:
            raise InvalidOperation("an account needs a non-empty external id")
        _nonnegative("overdraft_limit", overdraft_limit)
        _nonnegative("welcome_micro", welcome_micro)
        now = self._clock()
        with self._uow() as session:
            row = accounts.find(session, kind, external_id)
            account = convert.account(row) if row is not None else None
        if account is None:
            try:
                with self._uow() as session:
                    row = accounts.create(
                        session, kind, external_id, tier=tier, overdraft_limit=overdraft_limit, now=now
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
        with self._uow() as session:
            row = accounts.find(session, kind, external_id)
            return convert.account(row) if row is not None else None

    def get_account(self, account_id: int) -> Account:
        with self._uow() as session:
            return convert.account(accounts.get(session, account_id))

    def set_tier(self, account_id: int, tier: str) -> Account:
        if not tier:
            raise InvalidOperation("tier must be non-empty")
        with self._uow() as session:
            row = accounts.lock(session, account_id)
            row.tier = tier
            row.updated_at = self._clock()
            session.flush()
            return convert.account(row)

    def set_status(self, account_id: int, status: str) -> Account:
        accounts.check_status(status)
        with self._uow() as session:
            row = accounts.lock(session, account_id)
            row.status = status
            row.updated_at = self._clock()
            session.flush()
            return convert.account(row)

    def set_overdraft_limit(self, account_id: int, overdraft_limit: int) -> Account:
        _nonnegative("overdraft_limit", overdraft_limit)
        with self._uow() as session:
            row = accounts.lock(session, account_id)
            row.overdraft_limit = overdraft_limit
            row.updated_at = self._clock()
            session.flush()
            return convert.account(row)

    # -- keys -----------------------------------------------------------------

    def issue_key(
        self,
        account_id: int,
        *,
        user_id: str | None = None,
        team_id: str | None = None,
        alias: str | None = None,
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

    # -- grants ---------------------------------------------------------------

    def grant(
        self,
        account_id: int,
        micro: int,
        *,
        source: str,
        external_ref: str | None = None,
        priority: int = 0,
        expires_at: datetime | None = None,
        reason: str = "",
    ) -> Grant:
        """Add credit. With ``external_ref`` a repeat returns the first grant, unchanged."""
        return self._grant(
            account_id,
            micro,
            source=source,
            external_ref=external_ref,
            priority=priority,
            expires_at=expires_at,
            reason=reason,
            entry_kind="grant",
        )

    def refund(self, account_id: int, micro: int, *, reference: str, reason: str = "") -> Grant:
        """Give credit back (a ``refund`` grant); idempotent by ``reference``."""
        if not reference:
            raise InvalidOperation("a refund needs a reference (it is its idempotency key)")
        return self._grant(
            account_id,
            micro,
            source="refund",
            external_ref=reference,
            priority=0,
            expires_at=None,
            reason=reason or "refund",
            entry_kind="refund",
        )

    def adjust(self, account_id: int, micro: int, reason: str, *, reference: str = "") -> Balance:
        """An operator's correction: positive adds an ``adjustment`` grant, negative burns like a charge."""
        if isinstance(micro, bool) or not isinstance(micro, int) or micro == 0:
            raise InvalidOperation(
                f"an adjustment must be a non-zero whole number of micro-credits, got {micro!r}"
            )
        if not reason:
            raise InvalidOperation("an adjustment needs a reason")
        now = self._clock()
        with self._uow() as session:
            account = accounts.lock(session, account_id)
            if micro > 0:
                grants.add(
                    session,
                    account,
                    micro,
                    source="adjustment",
                    external_ref=None,
                    priority=0,
                    expires_at=None,
                    reason=reason,
                    entry_kind="adjustment",
                    now=now,
                )
            else:
                grants.burn(
                    session,
                    account,
                    -micro,
                    entry_kind="adjustment",
                    hold_id=None,
                    reference=reference,
                    reason=reason,
                    now=now,
                )
            return queries.balance(session, account_id)

    def _grant(
        self,
        account_id: int,
        micro: int,
        *,
        source: str,
        external_ref: str | None,
        priority: int,
        expires_at: datetime | None,
        reason: str,
        entry_kind: str,
    ) -> Grant:
        _positive("grant amount", micro)
        if not source.strip():
            raise InvalidOperation("a grant needs a source")
        if external_ref is not None and not external_ref:
            raise InvalidOperation("external_ref must be None or non-empty")
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidOperation("expires_at must be timezone-aware")
        now = self._clock()
        try:
            with self._uow() as session:
                account = accounts.lock(session, account_id)
                row = grants.add(
                    session,
                    account,
                    micro,
                    source=source,
                    external_ref=external_ref,
                    priority=priority,
                    expires_at=expires_at,
                    reason=reason,
                    entry_kind=entry_kind,
                    now=now,
                )
                return convert.grant(row)
        except IntegrityError:
            # The unique external_ref is the real guard; a concurrent twin got there first.
            if external_ref is None:
                raise
            with self._uow() as session:
                existing = grants.by_ref(session, external_ref)
                if existing is None:
                    raise
                return convert.grant(grants.check_same_account(existing, account_id))

    def grants(self, account_id: int, *, live_only: bool = False) -> list[Grant]:
        """The account's grants in burn-down order."""
        with self._uow() as session:
            return queries.grants(session, account_id, live_only=live_only)

    def expire_grants(self, now: datetime | None = None) -> int:
        """Write off what is left of every grant past its expiry; returns how many grants."""
        at = _aware(now) if now is not None else self._clock()
        with self._uow() as session:
            due = list(
                session.execute(
                    select(GrantRow.id, GrantRow.account_id)
                    .where(
                        GrantRow.remaining > 0, GrantRow.expires_at.is_not(None), GrantRow.expires_at <= at
                    )
                    .order_by(GrantRow.expires_at, GrantRow.id)
                )
            )
        count = 0
        for grant_id, account_id in due:
            with self._uow() as session:
                account = accounts.lock(session, account_id)
                row = session.get(GrantRow, grant_id, with_for_update=True)
                if row is not None and grants.expire(session, account, row, at) > 0:
                    count += 1
        return count

    # -- holds ----------------------------------------------------------------

    def hold(self, account_id: int, micro: int, *, ttl_seconds: float, reference: str = "") -> Hold:
        """Reserve the worst case of a call, or raise InsufficientCredits / AccountInactive."""
        _nonnegative("hold amount", micro)
        if ttl_seconds <= 0:
            raise InvalidOperation(f"ttl_seconds must be > 0, got {ttl_seconds!r}")
        with self._uow() as session:
            row = holds.place(
                session, account_id, micro, ttl_seconds=ttl_seconds, reference=reference, now=self._clock()
            )
            return convert.hold(row)

    def get_hold(self, hold_id: str) -> Hold:
        with self._uow() as session:
            row = session.get(HoldRow, hold_id)
            if row is None:
                raise HoldNotFound(hold_id)
            return convert.hold(row)

    def settle(self, hold_id: str, micro: int, usage: UsageRecord) -> Settlement:
        """Charge a served call exactly once; a repeat returns the first Settlement.

        The charge may exceed the hold and the overdraft limit: the call was served.
        A hold that was voided or expired meanwhile is still charged (``late=True``).
        """
        _nonnegative("charge", micro)
        if not isinstance(usage.provider_cost_usd, Decimal):
            raise InvalidOperation(
                "provider_cost_usd must be a Decimal (convert the float once, at the edge)"
            )
        try:
            with self._uow() as session:
                return holds.settle(session, hold_id, micro, usage, self._clock())
        except IntegrityError:
            with self._uow() as session:
                done = holds.existing_settlement(session, hold_id)
            if done is None:
                raise
            return done

    def void(self, hold_id: str, reason: str = "voided") -> bool:
        """Release an open hold without a charge; False when it was already resolved."""
        with self._uow() as session:
            return holds.void(session, hold_id, status="voided", reason=reason, now=self._clock())

    def expire_stale_holds(self, now: datetime | None = None) -> int:
        """Mark open holds past their expiry as expired (releasing them); returns how many."""
        at = _aware(now) if now is not None else self._clock()
        count = 0
        while True:
            with self._uow() as session:
                batch = holds.stale_ids(session, at, STALE_BATCH)
            done = 0
            for hold_id in batch:
                with self._uow() as session:
                    if holds.void(session, hold_id, status="expired", reason="hold expired", now=at):
                        done += 1
            count += done
            if len(batch) < STALE_BATCH or done == 0:
                return count

    # -- reading --------------------------------------------------------------

    def balance(self, account_id: int) -> Balance:
        with self._uow() as session:
            return queries.balance(session, account_id)

    def history(self, account_id: int, limit: int = 50) -> list[Entry]:
        """The account's entries, newest first."""
        with self._uow() as session:
            return queries.history(session, account_id, limit)

    def usage(self, account_id: int, limit: int = 50) -> list[UsageEvent]:
        """The account's usage events, newest first."""
        with self._uow() as session:
            return queries.usage(session, account_id, limit)

    def audit(self) -> list[str]:
        """Every violated invariant as a readable line; empty when the books balance."""
        with self._uow() as session:
            return audit.run(session)
