"""The bench's apply figure: every charge of its batches lands once, and its CPU is read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bench.pg_server import ServerWatch
from sqlalchemy import func, select

from bench import apply_bench
from ledger import Ledger
from ledger.tables import HoldRow, UsageEventRow


@pytest.fixture
def server(db_url: str) -> Iterator[ServerWatch | None]:
    if db_url.startswith("sqlite"):
        yield None
        return
    watch = ServerWatch(db_url)
    yield watch
    watch.close()


def test_the_batches_are_charged_once_each_and_their_cpu_counted(
    db_url: str, server: ServerWatch | None
) -> None:
    figures = apply_bench.measure(db_url, batch=250, batches=4, rounds=2, server=server)

    assert figures["charges_per_round"] == 1000
    assert len(figures["writer_rounds"]) == 2
    assert all(x > 0 for x in figures["writer_rounds"])
    if server is None:
        assert figures["server_cpu_us_per_charge"] is None
    else:
        # four rows a charge take the server some 50 ms of CPU a round: several of the
        # kernel's 10 ms ticks, never none
        assert figures["server_cpu_us_per_charge"] > 0
    books = Ledger(db_url)
    try:
        with books._engine.connect() as conn:
            events = conn.scalar(select(func.count()).select_from(UsageEventRow))
            settled = conn.scalar(
                select(func.count()).select_from(HoldRow).where(HoldRow.status == "settled")
            )
        # the warm-up batch, then two rounds of four: one usage event and one born-settled
        # hold row per charge
        assert events == settled == 250 + 2 * 1000
        assert books.audit() == []
    finally:
        books.dispose()
