"""A ``CreditGate`` built in-process on a real ledger, with a clock the test turns."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from credit_hooks import runtime
from credit_hooks.catalog_source import CatalogSource
from credit_hooks.gate import CreditGate, OpenCall
from credit_hooks.identity import Caller, Identity
from credit_hooks.outcome import Outcome
from credit_hooks.settings import CreditSettings
from ledger import Account, Ledger, Settlement
from ledger.journal import SettleJournal
from ledger.outbox import Outbox

PLANS = Path(__file__).with_name("plans.yaml")
EXAMPLE_CATALOG = Path(__file__).parents[2] / "examples" / "pricing.yaml"
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 1, 31, 10, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now


def make_gate(
    ledger: Ledger,
    tmp_path: Path,
    clock: Clock,
    pricing: Path = PLANS,
    journal: SettleJournal | None = None,
    **overrides: Any,
) -> CreditGate:
    settings = CreditSettings(
        **overrides,
        database_url="sqlite://",  # unused: the gate is handed its ledger
        pricing_file=pricing,
        period_job_seconds=0,
        account_cache_seconds=0,
        spend_cache_seconds=0,
        outbox_path=tmp_path / "outbox.jsonl",
    )
    catalogs = CatalogSource(pricing, ledger.catalog_rows, ledger.catalog_stamp)
    return CreditGate(settings, catalogs, ledger, Outbox(settings.outbox_path), clock=clock, journal=journal)


def runtime_books(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> Ledger:
    """Point the plugin's own runtime (``runtime.gate()``, as the proxy builds it) at a new
    SQLite ledger in ``tmp_path`` with the example catalog; ``env``: more ``CREDITS_*``."""
    url = f"sqlite:///{tmp_path / 'credits.db'}"
    settings = {
        "CREDITS_DATABASE_URL": url,
        "CREDITS_PRICING_FILE": str(EXAMPLE_CATALOG),
        "CREDITS_OUTBOX_PATH": str(tmp_path / "outbox.jsonl"),
        "CREDITS_PERIOD_JOB_SECONDS": "0",
        **env,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    book = Ledger(url)
    book.create_schema()
    return book


def caller(account: Account) -> Caller:
    return Caller(Identity(account.kind, account.external_id), account.id, None, None, None, None)


def chat(model: str, max_tokens: int | None = 50) -> dict[str, Any]:
    data: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if max_tokens is not None:
        data["max_tokens"] = max_tokens
    return data


def admit(gate: CreditGate, account: Account, model: str, **kw: Any) -> OpenCall:
    return run(gate.admit(caller(account), model, "acompletion", chat(model, **kw)))


def settle(
    gate: CreditGate, call: OpenCall, model: str, cost: str, provider: str = "openai"
) -> Settlement | None:
    """What the success hooks do; None when the charge went to the outbox."""
    outcome = Outcome(call.hold_id, model, model, provider, "completion", Decimal(cost), 10, 20, False, False)
    return run(gate.settle(outcome))


def finish(gate: CreditGate, call: OpenCall, model: str, cost: str, provider: str = "openai") -> int:
    settlement = settle(gate, call, model, cost, provider)
    assert settlement is not None
    return settlement.charged
