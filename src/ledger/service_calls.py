"""The ``Ledger`` facade's call methods: hold, settle, the charges without a hold of their own, void."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from pricing.errors import AccountNotFound, HoldNotFound, InvalidOperation

from . import batch, convert, escrow_sql, holds, hotpath, queries, settle_function
from .arguments import aware, check_charge, nonnegative
from .service_base import LedgerBase
from .tables import AccountRow, HoldRow
from .types import Hold, Settlement, UsageRecord

STALE_BATCH = 500


class CallsService(LedgerBase):
    """A call's money: holds, charges (held, unheld, escrowed), voids and expiry."""

    # -- holds ----------------------------------------------------------------

    def hold(self, account_id: int, micro: int, *, ttl_seconds: float, reference: str = "") -> Hold:
        """Reserve the worst case of a call, or raise InsufficientCredits / AccountInactive.

        The returned Hold carries ``balance_after`` and ``available_after``: the account's
        figures right after this hold, from the same statement.
        """
        nonnegative("hold amount", micro)
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
        check_charge(micro, usage)
        now = self._clock()
        try:
            if self._fast:
                # The common case: the hold is open. Its conditional UPDATE is the
                # exactly-once check; anything else matches no row and writes nothing.
                done: Settlement | None = batch.RUN_ALONE
                if self._batch is not None:
                    done = self._batch.submit(lambda conn: hotpath.settle(conn, hold_id, micro, usage, now))
                elif self._settle_function:
                    done = self._in_one_round_trip(
                        lambda conn: settle_function.settle(conn, hold_id, micro, usage, now)
                    )
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

    def _in_one_round_trip(self, settle: Callable[[Connection], Settlement | None]) -> Settlement | None:
        """``settle`` through a ``settle_function`` (PostgreSQL, autocommit); RUN_ALONE when
        it could not settle alone and the usual way must run (nothing was written)."""
        try:
            with self._uow.single() as conn:
                return settle(conn)
        except settle_function.Unavailable as why:
            # no single grant covers it: the usual way, this once; no function (a
            # database not migrated to 0003): the usual way from now on
            self._settle_function = why.args[0] == settle_function.NEEDS_BURN_LOOP
            run_alone: Settlement | None = batch.RUN_ALONE
            return run_alone

    def _charge_call(
        self,
        what: str,
        call_id: str,
        account_id: int,
        micro: int,
        usage: UsageRecord,
        write: Callable[[Connection, datetime], Settlement | None],
        one_round_trip: Callable[[Connection, datetime], Settlement | None] | None = None,
    ) -> Settlement:
        """A call's charge whose hold row is born settled (``write``), once by ``call_id``.

        ``write`` returns None when a hold with this id exists already: the charge was
        made (a repeat returns it) or a real hold was placed after all (settled now).
        ``one_round_trip`` is the same through a ``settle_function``, tried first.
        """
        check_charge(micro, usage)
        if not call_id or len(call_id) > 32:
            raise InvalidOperation(f"a hold id must be 1 to 32 characters, got {call_id!r}")
        if not self._fast:
            raise InvalidOperation(f"{what} needs SQLite 3.35+ (RETURNING) or PostgreSQL")
        try:
            now = self._clock()
            done: Settlement | None = batch.RUN_ALONE
            if one_round_trip is not None and self._settle_function:
                done = self._in_one_round_trip(lambda conn: one_round_trip(conn, now))
            if done is batch.RUN_ALONE:
                with self._uow.core() as conn:
                    done = write(conn, now)
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
            lambda conn, now: settle_function.settle_escrowed(
                conn, call_id, escrow_hold_id, account_id, micro, usage, reference=reference, now=now
            ),
        )

    def shrink_hold(self, hold_id: str, micro: int) -> int:
        """Give up to ``micro`` of an open hold back to its account, leaving it open.

        For escrow holds (``ledger.escrow``): credit no call will borrow any more. A
        ``release`` entry, the hold's amount and the account's held down by the same.
        Returns how much was given back: 0 when the hold is not open or does not exist.
        """
        nonnegative("shrink amount", micro)
        with self._uow.core() as conn:
            return escrow_sql.shrink(conn, hold_id, micro, self._clock())

    def void(self, hold_id: str, reason: str = "voided") -> bool:
        """Release an open hold without a charge; False when it was already resolved."""
        with self._uow() as session:
            return holds.void(session, hold_id, status="voided", reason=reason, now=self._clock())

    def expire_stale_holds(self, now: datetime | None = None) -> int:
        """Mark open holds past their expiry as expired (releasing them); returns how many."""
        at = aware(now) if now is not None else self._clock()
        return self._each_due(
            lambda session: holds.stale_ids(session, at, STALE_BATCH),
            lambda session, hold_id: holds.void(
                session, hold_id, status="expired", reason="hold expired", now=at
            ),
            STALE_BATCH,
        )
