"""Charges through the settle journal, on a disk that syncs quickly (the event loop waits
itself) and on one that does not (the loop's calls share fsyncs run off it)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from credit_hooks.gate import CreditGate
from credit_hooks.outcome import Outcome
from ledger import Account, Ledger, Settlement
from ledger.journal import SettleJournal

from .gate_harness import Clock, admit, make_gate

CALLS = 24
WARM_UP = 10
MODEL = "gpt-4o-mini"


def _outcome(hold_id: str) -> Outcome:
    return Outcome(hold_id, MODEL, MODEL, "openai", "completion", Decimal("0.0003"), 10, 20, False, False)


def _all_at_once(gate: CreditGate, account: Account, count: int) -> list[Settlement | None]:
    calls = [admit(gate, account, MODEL, max_tokens=10) for _ in range(count)]

    async def settle_all() -> list[Settlement | None]:
        return await asyncio.gather(*(gate.settle(_outcome(c.hold_id)) for c in calls))

    return asyncio.run(settle_all())


@pytest.mark.parametrize("loop_sync_seconds", [1.0, 0.0], ids=["quick-disk", "slow-disk"])
def test_concurrent_journaled_charges_land_once_each(
    ledger: Ledger, tmp_path: Path, loop_sync_seconds: float
) -> None:
    journal = SettleJournal(ledger, tmp_path / "journal", fast_sync_seconds=loop_sync_seconds)
    gate = make_gate(ledger, tmp_path, Clock(datetime(2027, 2, 10, tzinfo=UTC)), journal=journal)
    try:
        account = ledger.open_account("user", "busy", tier="business")
        ledger.grant(account.id, 100_000_000, source="purchase")
        # a new journal times its disk when it opens: quick here, unless 0 says never
        settlements = [_all_at_once(gate, account, 1)[0] for _ in range(WARM_UP)]
        assert journal.syncs_fast() is bool(loop_sync_seconds)
        synced_before = journal.stats.fsyncs
        settlements += _all_at_once(gate, account, CALLS)
        fsyncs = journal.stats.fsyncs - synced_before
        if loop_sync_seconds:
            assert fsyncs == 1  # on the loop itself, one for the calls settled in one pass of it
        else:
            assert fsyncs < CALLS  # off the loop, shared by the calls waiting together
        assert all(s is not None and s.journaled for s in settlements)
        assert journal.stats.recorded == WARM_UP + CALLS
        assert journal.flush(10)
        charged = sum(s.charged for s in settlements if s is not None)
        assert charged > 0
        balance = ledger.balance(account.id)
        assert (balance.balance, balance.held) == (100_000_000 - charged, 0)
        assert len(ledger.usage(account.id, limit=100)) == WARM_UP + CALLS
        assert ledger.audit() == []
    finally:
        journal.close()
        gate.close()


def test_one_call_at_a_time_waits_for_its_fsync_on_the_loop_even_on_a_slow_disk(
    ledger: Ledger, tmp_path: Path
) -> None:
    # every disk is slower than this: the journal judges it slow from the timings at open
    journal = SettleJournal(ledger, tmp_path / "journal", fast_sync_seconds=1e-9)
    gate = make_gate(ledger, tmp_path, Clock(datetime(2027, 2, 10, tzinfo=UTC)), journal=journal)
    try:
        account = ledger.open_account("user", "quiet", tier="business")
        ledger.grant(account.id, 100_000_000, source="purchase")
        assert not journal.syncs_fast()
        settlements = [_all_at_once(gate, account, 1)[0] for _ in range(WARM_UP)]
        # alone in flight, each waited on the loop: a hand-off would only have added its cost
        assert journal.stats.fsyncs == WARM_UP and journal.stats.fsyncs_handed_off == 0
        settlements += _all_at_once(gate, account, CALLS)
        assert 0 < journal.stats.fsyncs_handed_off < CALLS  # together: off the loop, shared
        assert all(s is not None and s.journaled for s in settlements)
        assert journal.flush(10)
        assert len(ledger.usage(account.id, limit=100)) == WARM_UP + CALLS
        assert ledger.audit() == []
    finally:
        journal.close()
        gate.close()
