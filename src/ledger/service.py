"""``Ledger``: the facade every other package uses. One transaction per method."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pricing.errors import AccountNotFound, HoldNotFound, InvalidOperation

from . import (
    accounts,
    audit,
    batch,
    catalog_rows,
    convert,
    escrow_sql,
    grants,
    holds,
    hotpath,
    jobs,
    keys,
    periods,
    queries,
    quotas,
    tier_changes,
    transfers,
)
from .catalog_rows import AccessRow
from .engine import UnitOfWork, make_engine
from .tables import AccountRow, ApiKeyRow, GrantRow, HoldRow, UsageEventRow, metadata
from .types import (
    Account,
    ApiKey,
    Balance,
    CatalogRowsSnapshot,
    Entry,
    Grant,
    Hold,
    IssuedKey,
    PeriodResult,
    QuotaLike,
    Settlement,
    Transfer,
    UsageEvent,
    UsageRecord,
    UsageTotals,
)

STALE_BATCH = 500
TIER_CHANGE_BATCH = 500

T = TypeVar("T")
K = TypeVar("K")


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise InvalidOperation("naive datetime given to the ledger; pass a timezone-aware one")
    return now


def _nonnegative(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidOperation(f"{name} must be a whole number of micro-credits >= 0, got {value!r}")


def _check_charge(micro: int, usage: UsageRecord) -> None:
    _nonnegative("charge", micro)
    if not isinstance(usage.provider_cost_usd, Decimal):
        raise InvalidOperation("provider_cost_usd must be a Decimal (convert the float once, at the edge)")


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidOperation(f"{name} must be a whole number of micro-credits > 0, got {value!r}")


_UNSETTLED = text(
    """
SELECT v.id FROM unnest(CAST(:ids AS text[])) AS v(id)
WHERE NOT EXISTS (SELECT 1 FROM usage_events AS u WHERE u.hold_id = v.id)
"""
)


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
        group_commit: bool = False,
        group_commit_max: int = batch.MAX_BATCH,
        async_holds: bool = False,
    ) -> None:
        """``group_commit=True``: ``hold`` and ``settle`` from many threads share commits.

        One writer thread then runs the queued hot-path operations (up to
        ``group_commit_max`` at a time) in one transaction, one SAVEPOINT each, and
        commits once; every caller returns after the commit that holds its operation.
        Same results, exceptions and invariants as without it (see ``ledger.batch``).
        Ignored on SQLite older than 3.35, which has no hot path.

        ``async_holds=True`` (PostgreSQL): a hold's commit does not wait for its WAL flush
        (``synchronous_commit=off`` on the connections that place holds). A hold is a
        reservation, not money: if PostgreSQL itself crashes, holds of the last few
        hundred milliseconds may vanish, and their calls are then charged without a hold
        (``settle`` falls back to ``settle_unheld``, once, by the call's id), so the worst
        case is an account going below zero by the calls in flight at the crash. Every
        charge still waits for its own flush (which also flushes every earlier hold).
        """
        self._engine = make_engine(
            url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout
        )
        self._uow = UnitOfWork(self._engine)
        self._hold_engine: Engine | None = None
        self._hold_uow = self._uow
        if async_holds and self._engine.dialect.name == "postgresql":
            self._hold_engine = make_engine(
                url,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
                synchronous_commit=False,
            )
            self._hold_uow = UnitOfWork(self._hold_engine)
        self._clock = clock or (lambda: datetime.now(UTC))
        # Core statements with RETURNING (ledger.hotpath) unless SQLite is too old for them.
        self._fast = self._engine.dialect.name == "postgresql" or hotpath.SQLITE_HAS_RETURNING
        self._batch = (
            batch.GroupCommitter(self._engine, max_batch=group_commit_max)
            if group_commit and self._fast
            else None
        )

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

    @property
    def group_commit(self) -> batch.GroupCommitter | None:
        """The group-commit writer when it is on (its ``batches`` / ``operations`` counts)."""
        return self._batch

    def dispose(self) -> None:
        """Stop the group-commit writer (after what is queued) and close the connections."""
        if self._batch is not None:
            self._batch.close()
        self._engine.dispose()
        if self._hold_engine is not None:
            self._hold_engine.dispose()

    def __repr__(self) -> str:
        return f"Ledger({self.url!r})"

    def now(self) -> datetime:
        """The ledger's clock (injected by tests)."""
        return self._clock()

    def core_transaction(self, *, flush: bool = True) -> AbstractContextManager[Connection]:
        """One Core transaction for many hot-path operations (``ledger.journal``).

        ``flush=False``: on a ledger with ``async_holds``, the commit does not wait for its
        WAL flush either; only for writes kept elsewhere until ``sync_point`` (the settle
        journal keeps every charge on disk until it has checked them in the ledger).
        Outages surface as ``BillingUnavailable``; nothing is committed unless the block ends.
        """
        return self._uow.core() if flush else self._hold_uow.core()

    def sync_point(self) -> None:
        """Return once every commit made so far, async ones included, is flushed to disk.

        On PostgreSQL a synchronous commit that writes a commit record (it takes a
        transaction id) flushes the WAL up to itself, and so everything before it.
        """
        with self._uow.core() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT txid_current()"))

    def unsettled(self, hold_ids: Sequence[str]) -> set[str]:
        """The hold ids in ``hold_ids`` that have no usage event (not charged) yet."""
        found: set[str] = set()
        with self._uow.core() as conn:
            if self.dialect == "postgresql":
                # one anti-join returning only the missing ids (usually none): a settle
                # journal's segment asks for 50,000 at a time
                return {row[0] for row in conn.execute(_UNSETTLED, {"ids": list(hold_ids)})}
            for start in range(0, len(hold_ids), 1000):
                chunk = list(hold_ids[start : start + 1000])
                found.update(
                    conn.execute(
                        select(UsageEventRow.hold_id).where(UsageEventRow.hold_id.in_(chunk))
                    ).scalars()
                )
        return set(hold_ids) - found

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
        _nonnegative("overdraft_limit", overdraft_limit)
        _nonnegative("welcome_micro", welcome_micro)
        if period_anchor is not None:
            _aware(period_anchor)
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
        _nonnegative("overdraft_limit", overdraft_limit)
        return self._update_account(account_id, overdraft_limit=overdraft_limit)

    def set_byok(self, account_id: int, byok: bool) -> Account:
        """Switch the account's bring-your-own-key mode."""
        return self._update_account(account_id, byok=bool(byok))

    def set_period_anchor(self, account_id: int, period_anchor: datetime) -> Account:
        """Move the start of the account's billing periods (a new subscription, say)."""
        _aware(period_anchor)
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
        _nonnegative("prorated_micro", prorated_micro)
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
        _aware(effective_at)
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
        at = _aware(now) if now is not None else self._clock()
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

    def _grant_by_ref(self, external_ref: str, account_id: int) -> Grant | None:
        with self._uow() as session:
            row = grants.by_ref(session, external_ref)
            return convert.grant(grants.check_same_account(row, account_id)) if row is not None else None

    # -- periods --------------------------------------------------------------

    def allocate_period(
        self,
        account_id: int,
        *,
        period_start: datetime,
        period_end: datetime,
        allocation_micro: int,
        rollover_fraction: Decimal | None = None,
        rollover_cap_micro: int | None = None,
        rollover_expires_at: datetime | None = None,
    ) -> PeriodResult:
        """Start a billing period, once: grant its allocation, carry over, expire the last one.

        In one transaction: a ``subscription`` grant of ``allocation_micro`` expiring at
        ``period_end`` (``external_ref`` ``alloc:{account_id}:{period_start, UTC ISO}``);
        of the last period's allocation(s), unused credit × ``rollover_fraction`` (floored,
        at most ``rollover_cap_micro``) becomes a ``rollover`` grant expiring at
        ``rollover_expires_at`` or ``period_end``, and the rest is expired. Purchases,
        bonuses and earlier rollovers are left alone. A repeat returns the first result
        with ``already_done=True`` and changes nothing.
        """
        _aware(period_start)
        _aware(period_end)
        if period_end <= period_start:
            raise InvalidOperation("period_end must be after period_start")
        _positive("allocation_micro", allocation_micro)
        if rollover_fraction is not None and (
            not isinstance(rollover_fraction, Decimal) or not Decimal(0) <= rollover_fraction <= Decimal(1)
        ):
            raise InvalidOperation(
                f"rollover_fraction must be a Decimal in [0, 1], got {rollover_fraction!r}"
            )
        if rollover_cap_micro is not None:
            _nonnegative("rollover_cap_micro", rollover_cap_micro)
        if rollover_expires_at is not None:
            _aware(rollover_expires_at)
        try:
            with self._uow() as session:
                return periods.allocate(
                    session,
                    accounts.lock(session, account_id),
                    period_start=period_start,
                    period_end=period_end,
                    allocation_micro=allocation_micro,
                    rollover_fraction=rollover_fraction,
                    rollover_cap_micro=rollover_cap_micro,
                    rollover_expires_at=rollover_expires_at,
                    now=self._clock(),
                )
        except IntegrityError:
            # A concurrent twin inserted the allocation first: report what it did.
            with self._uow() as session:
                found = grants.by_ref(session, periods.allocation_ref(account_id, period_start))
                if found is None:
                    raise
                return periods.existing(session, account_id, found, period_start)

    def period_usage_totals(
        self, account_id: int, since: datetime, until: datetime | None = None
    ) -> UsageTotals:
        """Provider cost (all, and BYOK only), µcr charged and calls in ``[since, until)``."""
        _aware(since)
        if until is not None:
            _aware(until)
        with self._uow() as session:
            return queries.usage_totals(session, account_id, since, until)

    # -- quotas ---------------------------------------------------------------

    def consume_quotas(self, account_id: int, checks: Sequence[QuotaLike]) -> None:
        """Count one call against every check, all or nothing.

        Raises ``QuotaExceeded(what, limit, resets_at=window_end)`` for a check already at
        its limit; then no counter moves. The database does the counting, so concurrent
        proxies cannot let more than ``limit`` calls through.
        """
        quotas.check_specs(checks)
        if not checks:
            return
        try:
            with self._uow() as session:
                quotas.consume(session, account_id, checks, self._clock())
        except IntegrityError:
            # The only foreign key: the account.
            with self._uow() as session:
                if session.get(AccountRow, account_id) is None:
                    raise AccountNotFound(str(account_id)) from None
            raise

    def release_quotas(self, account_id: int, checks: Sequence[QuotaLike]) -> None:
        """Give back one call on every check (the call failed upstream); never below zero."""
        quotas.check_specs(checks)
        if not checks:
            return
        with self._uow() as session:
            quotas.release(session, account_id, checks, self._clock())

    def quota_usage(self, account_id: int, checks: Sequence[QuotaLike]) -> list[int]:
        """The current count of each check's counter, in the order given."""
        quotas.check_specs(checks)
        with self._uow() as session:
            return quotas.counts(session, account_id, checks)

    def prune_quota_counters(self, before: datetime) -> int:
        """Delete counters of windows that started before ``before``: pass a time earlier
        than the start of any window still in use (now minus the longest window)."""
        _aware(before)
        with self._uow() as session:
            return quotas.prune(session, before)

    # -- transfers ------------------------------------------------------------

    def transfer(
        self, from_account_id: int, to_account_id: int, micro: int, *, reference: str, reason: str = ""
    ) -> Transfer:
        """Move credit between accounts, once per ``reference``.

        The source's grants burn down like a charge, strictly: refused with
        ``InsufficientCredits`` when it would leave available below -overdraft_limit,
        ``AccountInactive`` unless the source is active. The target gets a ``transfer``
        grant (``external_ref`` ``transfer:{reference}``). A repeat returns the first.
        """
        _positive("transfer amount", micro)
        if not reference or len(reference) > 200:
            raise InvalidOperation(
                "a transfer needs a reference of 1 to 200 characters (its idempotency key)"
            )
        if from_account_id == to_account_id:
            raise InvalidOperation("a transfer needs two different accounts")
        try:
            with self._uow() as session:
                return transfers.transfer(
                    session,
                    from_account_id,
                    to_account_id,
                    micro,
                    reference=reference,
                    reason=reason,
                    now=self._clock(),
                )
        except IntegrityError:
            with self._uow() as session:
                found = grants.by_ref(session, transfers.transfer_ref(reference))
                if found is None:
                    raise
                return transfers.load(session, found, from_account_id, to_account_id)

    # -- job leases -----------------------------------------------------------

    def run_exclusive(
        self, name: str, fn: Callable[[], T], *, lease_seconds: float = 60, keep_lease: bool = False
    ) -> T | None:
        """Run ``fn`` unless another holder (another replica) has the lease ``name``; then None.

        The lease is given back when ``fn`` returns or raises; with ``keep_lease`` it is kept
        until it runs out, so the job runs at most once per ``lease_seconds`` across
        replicas. Pick ``lease_seconds`` longer than ``fn`` runs: an expired lease can be taken.
        """
        if not name or len(name) > 128:
            raise InvalidOperation("a job name must be 1 to 128 characters")
        if lease_seconds <= 0:
            raise InvalidOperation(f"lease_seconds must be > 0, got {lease_seconds!r}")
        holder = uuid.uuid4().hex
        with self._uow() as session:
            if not jobs.acquire(session, name, holder, lease_seconds=lease_seconds, now=self._clock()):
                return None
        try:
            return fn()
        finally:
            if not keep_lease:
                with self._uow() as session:
                    jobs.release(session, name, holder, now=self._clock())

    # -- catalog rows ---------------------------------------------------------

    def catalog_rows(self) -> CatalogRowsSnapshot:
        """Every catalog row (JSON ``data`` decoded) and a stamp, read in one transaction."""
        with self._uow() as session:
            return catalog_rows.snapshot(session)

    def catalog_stamp(self) -> str:
        """The ``stamp`` ``catalog_rows()`` would return now, for cheap change polling."""
        with self._uow() as session:
            return catalog_rows.stamp(session)

    def upsert_tier_row(self, code: str, *, name: str, data: Mapping[str, Any], updated_by: str) -> None:
        if not code or len(code) > 64:
            raise InvalidOperation("a tier code must be 1 to 64 characters")
        with self._uow() as session:
            catalog_rows.upsert_tier(
                session, code, name=name, data=data, updated_by=updated_by, now=self._clock()
            )

    def delete_tier_row(self, code: str, *, updated_by: str) -> bool:
        """Delete a tier row and its model access rows; False when there was none."""
        with self._uow() as session:
            return catalog_rows.delete_tier(session, code, updated_by=updated_by, now=self._clock())

    def set_model_access_rows(self, tier_code: str, rows: Sequence[AccessRow], *, updated_by: str) -> None:
        """Replace the tier's model access rows: ``(pattern, effect)`` pairs or mappings with
        ``pattern`` and ``effect`` (``allow`` or ``deny``), kept in the order given."""
        with self._uow() as session:
            catalog_rows.set_model_access(session, tier_code, rows, updated_by=updated_by, now=self._clock())

    def upsert_pricing_rule_row(
        self,
        rule_id: str,
        *,
        data: Mapping[str, Any],
        priority: int = 0,
        active: bool = True,
        updated_by: str,
    ) -> None:
        if not rule_id or len(rule_id) > 128:
            raise InvalidOperation("a pricing rule id must be 1 to 128 characters")
        with self._uow() as session:
            catalog_rows.upsert_pricing_rule(
                session,
                rule_id,
                data=data,
                priority=priority,
                active=active,
                updated_by=updated_by,
                now=self._clock(),
            )

    def delete_pricing_rule_row(self, rule_id: str, *, updated_by: str) -> bool:
        """Delete a pricing rule row; False when there was none."""
        with self._uow() as session:
            return catalog_rows.delete_pricing_rule(
                session, rule_id, updated_by=updated_by, now=self._clock()
            )

    # -- holds ----------------------------------------------------------------

    def hold(self, account_id: int, micro: int, *, ttl_seconds: float, reference: str = "") -> Hold:
        """Reserve the worst case of a call, or raise InsufficientCredits / AccountInactive.

        The returned Hold carries ``balance_after`` and ``available_after``: the account's
        figures right after this hold, from the same statement.
        """
        _nonnegative("hold amount", micro)
        if ttl_seconds <= 0:
            raise InvalidOperation(f"ttl_seconds must be > 0, got {ttl_seconds!r}")
        now = self._clock()
        if not self._fast:
            with self._uow() as session:
                row = holds.place(
                    session, account_id, micro, ttl_seconds=ttl_seconds, reference=reference, now=now
                )
                balance = queries.balance(session, account_id)
                return dataclasses.replace(
                    convert.hold(row), balance_after=balance.balance, available_after=balance.available
                )
        placed: Hold | None = batch.RUN_ALONE
        if self._batch is not None:
            placed = self._batch.submit(
                lambda conn: hotpath.hold(
                    conn, account_id, micro, ttl_seconds=ttl_seconds, reference=reference, now=now
                )
            )
        if placed is batch.RUN_ALONE:
            # PostgreSQL: one statement in autocommit mode (one round trip).
            unit = self._hold_uow.single if self.dialect == "postgresql" else self._uow.core
            with unit() as conn:
                placed = hotpath.hold(
                    conn, account_id, micro, ttl_seconds=ttl_seconds, reference=reference, now=now
                )
        if placed is None:
            # Refused: read the account to say why (AccountNotFound, AccountInactive or
            # InsufficientCredits). Nothing was written.
            with self._uow() as session:
                holds.refuse(session, account_id, micro)
        assert placed is not None
        return placed

    def renew_hold(self, hold_id: str, ttl_seconds: float) -> bool:
        """Extend an open hold so it expires ``ttl_seconds`` from now (for long streams).

        Never shortens it. Returns False when the hold is not open (settled, voided,
        expired by the sweeper) or does not exist (a hold id the proxy made up while the
        ledger was unreachable): nothing is changed then.
        """
        if ttl_seconds <= 0:
            raise InvalidOperation(f"ttl_seconds must be > 0, got {ttl_seconds!r}")
        until = self._clock() + timedelta(seconds=ttl_seconds)
        with self._uow.single() as conn:
            return hotpath.renew(conn, hold_id, until)

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
        The Settlement carries ``balance_after`` / ``available_after``.
        """
        _check_charge(micro, usage)
        now = self._clock()
        try:
            if self._fast:
                # The common case: the hold is open. Its conditional UPDATE is the
                # exactly-once check; anything else matches no row and writes nothing.
                done: Settlement | None = batch.RUN_ALONE
                if self._batch is not None:
                    done = self._batch.submit(lambda conn: hotpath.settle(conn, hold_id, micro, usage, now))
                if done is batch.RUN_ALONE:
                    with self._uow.core() as conn:
                        done = hotpath.settle(conn, hold_id, micro, usage, now)
                if done is not None:
                    return done
            # Already settled (return it), voided or expired (charge it late), or unknown.
            with self._uow() as session:
                return holds.settle(session, hold_id, micro, usage, now)
        except IntegrityError:
            with self._uow() as session:
                found = holds.existing_settlement(session, hold_id)
            if found is None:
                raise
            return found

    def settle_unheld(
        self, hold_id: str, account_id: int, micro: int, usage: UsageRecord, *, reference: str = ""
    ) -> Settlement:
        """Charge a call that was served without a hold (fail-open while the ledger was down).

        ``hold_id`` is the id the proxy generated for the call (``ids.new_hold_id``). In one
        transaction the hold row is written already settled (amount 0, charged
        ``micro``), the account's grants burn (the rest is debt, past the overdraft limit
        if need be: the call was served), with the charge entries and the usage event.
        Idempotent by ``hold_id``: a repeat returns the first Settlement. If a real hold
        with this id exists (it was placed after all), it is settled like ``settle``.
        """
        return self._charge_call(
            "settle_unheld",
            hold_id,
            account_id,
            micro,
            usage,
            lambda conn, now: hotpath.settle_unheld(
                conn, hold_id, account_id, micro, usage, reference=reference, now=now
            ),
        )

    def _charge_call(
        self,
        what: str,
        call_id: str,
        account_id: int,
        micro: int,
        usage: UsageRecord,
        write: Callable[[Connection, datetime], Settlement | None],
    ) -> Settlement:
        """A call's charge whose hold row is born settled (``write``), once by ``call_id``.

        ``write`` returns None when a hold with this id exists already: the charge was
        made (a repeat returns it) or a real hold was placed after all (settled now).
        """
        _check_charge(micro, usage)
        if not call_id or len(call_id) > 32:
            raise InvalidOperation(f"a hold id must be 1 to 32 characters, got {call_id!r}")
        if not self._fast:
            raise InvalidOperation(f"{what} needs SQLite 3.35+ (RETURNING) or PostgreSQL")
        try:
            with self._uow.core() as conn:
                done = write(conn, self._clock())
        except IntegrityError:
            # The only foreign key the first insert can break: the account.
            with self._uow() as session:
                if session.get(AccountRow, account_id) is None:
                    raise AccountNotFound(str(account_id)) from None
            raise
        if done is not None:
            return done
        existing = self.get_hold(call_id)
        if existing.account_id != account_id:
            raise InvalidOperation(
                f"hold {call_id} belongs to account {existing.account_id}, not {account_id}"
            )
        return self.settle(call_id, micro, usage)

    def settle_escrowed(
        self,
        call_id: str,
        escrow_hold_id: str,
        account_id: int,
        micro: int,
        usage: UsageRecord,
        *,
        reference: str = "",
    ) -> Settlement:
        """Charge a call whose credit was lent from the escrow hold ``escrow_hold_id``.

        ``call_id`` is the call's own id (``Hold.id`` of the loan ``ledger.escrow`` made).
        In one transaction: the call's hold row, born settled (amount 0, charged
        ``micro``); up to ``micro`` taken from the escrow while it is open (a ``release``
        entry on the escrow, ``held`` down by as much); the balance down by ``micro``
        through the grants (the rest is debt); the usage event. An escrow no longer open
        (expired, voided) gives nothing: the call is charged like a late charge. No
        overdraft check: the call was served. Idempotent by ``call_id``: a repeat returns
        the first Settlement and takes nothing more from the escrow.
        """
        if not escrow_hold_id:
            raise InvalidOperation("an escrowed charge needs the escrow hold id")
        return self._charge_call(
            "settle_escrowed",
            call_id,
            account_id,
            micro,
            usage,
            lambda conn, now: escrow_sql.settle_escrowed(
                conn, call_id, escrow_hold_id, account_id, micro, usage, reference=reference, now=now
            ),
        )

    def shrink_hold(self, hold_id: str, micro: int) -> int:
        """Give up to ``micro`` of an open hold back to its account, leaving it open.

        For escrow holds (``ledger.escrow``): credit no call will borrow any more. A
        ``release`` entry, the hold's amount and the account's held down by the same.
        Returns how much was given back: 0 when the hold is not open or does not exist.
        """
        _nonnegative("shrink amount", micro)
        with self._uow.core() as conn:
            return escrow_sql.shrink(conn, hold_id, micro, self._clock())

    def void(self, hold_id: str, reason: str = "voided") -> bool:
        """Release an open hold without a charge; False when it was already resolved."""
        with self._uow() as session:
            return holds.void(session, hold_id, status="voided", reason=reason, now=self._clock())

    def expire_stale_holds(self, now: datetime | None = None) -> int:
        """Mark open holds past their expiry as expired (releasing them); returns how many."""
        at = _aware(now) if now is not None else self._clock()
        return self._each_due(
            lambda session: holds.stale_ids(session, at, STALE_BATCH),
            lambda session, hold_id: holds.void(
                session, hold_id, status="expired", reason="hold expired", now=at
            ),
            STALE_BATCH,
        )

    def _each_due(
        self,
        due: Callable[[Session], Sequence[K]],
        apply: Callable[[Session, K], bool],
        batch_size: int,
    ) -> int:
        """Apply ``apply`` to every due item, one transaction each, so one bad row stalls nothing else.

        Stops when a page comes back short, or when a full page changed nothing (the same
        rows would come back forever).
        """
        count = 0
        while True:
            with self._uow() as session:
                batch = due(session)
            done = 0
            for item in batch:
                with self._uow() as session:
                    if apply(session, item):
                        done += 1
            count += done
            if len(batch) < batch_size or done == 0:
                return count

    # -- reading --------------------------------------------------------------

    def balance(self, account_id: int) -> Balance:
        # One SELECT; on PostgreSQL in autocommit mode (one round trip, no BEGIN/COMMIT).
        with self._uow.single() as conn:
            found = hotpath.balance(conn, account_id)
        if found is None:
            raise AccountNotFound(str(account_id))
        return found

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
