"""A proxy stopped by SIGTERM applies its settle journal before it exits, and its
escrows give back what they did not lend.

uvicorn ends a server stopped by a signal by raising the signal again, so no ``atexit``
handler runs: without ``credit_hooks.shutdown`` the last charges stayed in the journal
for the next start, and a disk that dies with the process would lose them.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
from bench.proxy_bench import journal_counts_in

from ledger import Ledger

from .conftest import EXAMPLE_CATALOG
from .proxy import start_proxy
from .test_credit_gate import MICRO, client, open_account
from .test_escrow_local import CHARGE

pytestmark = pytest.mark.e2e


def test_a_proxy_stopped_by_sigterm_leaves_nothing_in_its_journal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'credits.db'}"
    books = Ledger(url)
    books.create_schema()
    shutil.copy(EXAMPLE_CATALOG, tmp_path / "pricing.yaml")
    account, key = open_account(books, "stopping", "pro", 100)
    rich, rich_key = open_account(books, "stopping-rich", "pro", 100_000)  # lent from an escrow
    journal = tmp_path / "journal"
    env = {  # the defaults (journal, local escrow), with batches that wait long
        "CREDITS_DATABASE_URL": url,
        "CREDITS_PRICING_FILE": str(tmp_path / "pricing.yaml"),
        "CREDITS_UNKNOWN_ACCOUNTS": "refuse",
        "CREDITS_PERIOD_JOB_SECONDS": "0",
        "CREDITS_JOURNAL_DIR": str(journal),
        "CREDITS_JOURNAL_LINGER_MS": "10000",
    }
    proxy = start_proxy(tmp_path, env)
    try:
        for _ in range(3):
            for k in (key, rich_key):
                client(proxy, k).chat.completions.create(
                    model="demo-fast", messages=[{"role": "user", "content": "hi"}], max_tokens=100
                )
        assert len(books.usage(account.id)) < 3  # recorded, still lingering in the journal
        assert books.escrowed(rich.id) > 0
        proxy.process.send_signal(signal.SIGTERM)
        proxy.process.wait(timeout=30)
    finally:
        proxy.stop()

    try:
        assert [e.charged for e in books.usage(account.id)] == [CHARGE] * 3
        balance = books.balance(account.id)
        assert (balance.balance, balance.held) == (100 * MICRO - 3 * CHARGE, 0)
        rich_balance = books.balance(rich.id)
        assert [e.charged for e in books.usage(rich.id)] == [CHARGE] * 3
        # its escrow gave back what it had not lent, instead of holding it until it expires
        assert (rich_balance.balance, rich_balance.held) == (100_000 * MICRO - 3 * CHARGE, 0)
        assert list(journal.rglob("*.jsonl")) == []  # nothing left for a next start
        assert books.audit() == []
        stopped = journal_counts_in(proxy.log())  # what the benchmark reads of each proxy
        assert stopped is not None
        # one call at a time: each charge on disk before the next is written
        assert (stopped["charges"], stopped["fsyncs"]) == (6, 6)
        assert 0 <= stopped["fsyncs_off_loop"] <= 6
    finally:
        books.dispose()
