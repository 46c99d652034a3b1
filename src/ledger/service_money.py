"""The ``Ledger`` facade's credit methods: grants, refunds, adjustments, periods, quotas, transfers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from pricing.errors import AccountNotFound, InvalidOperation

from . import accounts, convert, grants, periods, queries, quotas, transfers
from .arguments import aware, nonnegative, positive
from .service_base import LedgerBase
from .tables import AccountRow, GrantRow
from .types import Balance, Grant, PeriodResult, QuotaLike, Transfer, UsageTotals


class MoneyService(LedgerBase):
    """Credit in and out: grants, refunds, adjustments, expiry, billing periods, quotas, transfers."""

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
        positive("grant amount", micro)
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
        at = aware(now) if now is not None else self._clock()
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
        aware(period_start)
        aware(period_end)
        if period_end <= period_start:
            raise InvalidOperation("period_end must be after period_start")
        positive("allocation_micro", allocation_micro)
        if rollover_fraction is not None and (
            not isinstance(rollover_fraction, Decimal) or not Decimal(0) <= rollover_fraction <= Decimal(1)
        ):
            raise InvalidOperation(
                f"rollover_fraction must be a Decimal in [0, 1], got {rollover_fraction!r}"
            )
        if rollover_cap_micro is not None:
            nonnegative("rollover_cap_micro", rollover_cap_micro)
        if rollover_expires_at is not None:
            aware(rollover_expires_at)
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
        aware(since)
        if until is not None:
            aware(until)
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
        aware(before)
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
        positive("transfer amount", micro)
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
