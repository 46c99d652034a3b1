"""The post-call hook and the success event settle the same call together: the ledger hears it once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from credit_hooks.outcome import Outcome
from ledger import Ledger

from .gate_harness import Clock, admit, make_gate


def test_concurrent_settles_of_one_call_reach_the_ledger_once(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = make_gate(ledger, tmp_path, Clock(datetime(2027, 2, 10, tzinfo=UTC)))
    account = ledger.open_account("user", "twice", tier="business")
    ledger.grant(account.id, 100_000_000, source="purchase")
    call = admit(gate, account, "gpt-4o-mini", max_tokens=10)
    calls: list[str] = []
    real_settle = ledger.settle

    def counted(hold_id: str, micro: int, usage: Any) -> Any:
        calls.append(hold_id)
        return real_settle(hold_id, micro, usage)

    monkeypatch.setattr(ledger, "settle", counted)
    outcome = Outcome(
        call.hold_id,
        "gpt-4o-mini",
        "gpt-4o-mini",
        "openai",
        "completion",
        Decimal("0.0003"),
        10,
        20,
        False,
        False,
    )

    async def both() -> list[Any]:
        return await asyncio.gather(gate.settle(outcome), gate.settle(outcome), gate.settle(outcome))

    first, second, third = asyncio.run(both())

    assert calls == [call.hold_id]
    assert first is not None and first == second == third
    assert len(ledger.usage(account.id)) == 1
