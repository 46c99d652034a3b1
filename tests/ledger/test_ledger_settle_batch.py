"""A batch of charges gives the same books as the same charges one after another."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import astuple, replace
from decimal import Decimal
from pathlib import Path

import pytest
from ledger_testlib import CR, USAGE
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from ledger import Ledger, UsageRecord, settle_batch_function
from ledger.journal import JournalStats, apply_charges
from ledger.outbox import PendingCharge
from ledger.settle_batch import LentCharge, OpenCharge, settle
from ledger.settle_function import NEEDS_BURN_LOOP, Unavailable

# every column of a usage event away from USAGE's values: what each statement writes is
# compared column by column with what the one-by-one path writes
ODD = replace(
    USAGE,
    user_id='o"dd \\ ü\n',
    team_id=None,
    end_user_id=None,
    tokens_in=2**40,
    tokens_out=0,
    provider_cost_usd=Decimal("0.000000123456789012"),
    markup_rule=None,
    catalog_version=None,
    cache_hit=True,
    stream=True,
    byok=True,
)


@pytest.fixture
def twin(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Ledger]:
    """A second ledger on a database of the same kind, for the one-by-one run."""
    if db_url.startswith("sqlite"):
        book = Ledger(f"sqlite:///{tmp_path / 'twin.db'}")
        book.create_schema()
        yield book
        book.dispose()
        return
    admin: Engine = request.getfixturevalue("pg_admin")
    name = f"{make_url(db_url).database}_twin"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    book = Ledger(make_url(db_url).set(database=name).render_as_string(hide_password=False))
    try:
        book.create_schema()
        yield book
    finally:
        book.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _scenario(ledger: Ledger) -> tuple[list[OpenCharge], list[LentCharge], int]:
    """Two accounts; grants that a batch's charges burn across, into debt; an escrow."""
    rich = ledger.open_account("user", "rich", tier="pro")
    small = ledger.open_account("user", "small", tier="pro")
    ledger.grant(rich.id, 3 * CR, source="purchase", priority=1, external_ref="r1")
    ledger.grant(rich.id, 10 * CR, source="purchase", external_ref="r2")
    ledger.grant(small.id, CR, source="purchase", external_ref="s1")
    escrow = ledger.hold(rich.id, 2 * CR, ttl_seconds=60, reference="escrow")
    # the batch's order is the reverse of the ids' order: a statement that hands the
    # closed holds back by id must not decide which charge burns which grant
    holds = sorted(
        (ledger.hold(rich.id, CR, ttl_seconds=60) for _ in range(3)), key=lambda h: h.id, reverse=True
    )
    small_hold = ledger.hold(small.id, 500_000, ttl_seconds=60)
    voided = ledger.hold(rich.id, CR, ttl_seconds=60)
    ledger.void(voided.id)
    held = [
        OpenCharge(holds[0].id, 1_500_000, USAGE),  # more than its hold
        OpenCharge(holds[1].id, 2_000_000, USAGE),  # crosses from the first grant to the second
        OpenCharge(holds[1].id, 9_999, USAGE),  # a repeat: the first charge of a hold wins
        OpenCharge(small_hold.id, 1_200_000, USAGE),  # past the account's grants: debt
        OpenCharge(voided.id, 300_000, USAGE),  # not open: left for the one-by-one path
        OpenCharge(holds[2].id, 0, ODD),  # free
    ]
    lent = [
        LentCharge("c" * 31 + "1", escrow.id, rich.id, 700_000, USAGE),
        LentCharge("c" * 31 + "2", escrow.id, rich.id, 1_000_000, ODD),
        LentCharge("c" * 31 + "3", escrow.id, rich.id, 900_000, USAGE),  # the escrow has 300_000 left
        LentCharge("c" * 31 + "1", escrow.id, rich.id, 5, USAGE),  # a repeat
    ]
    return held, lent, rich.id


def _books(ledger: Ledger) -> dict[str, object]:
    accounts = [ledger.find_account("user", name) for name in ("rich", "small")]
    out: dict[str, object] = {}
    for account in accounts:
        assert account is not None
        b = ledger.balance(account.id)
        out[account.external_id] = (
            (b.balance, b.held, b.debt),
            sorted(g.remaining for g in ledger.grants(account.id)),
            sorted(
                (
                    astuple(replace(u, id=0, hold_id="", created_at=None))  # type: ignore[arg-type]
                    for u in ledger.usage(account.id, limit=100)
                ),
                key=repr,  # None and text may meet in a column
            ),
            sorted(
                (e.kind, e.amount, e.held_delta, e.reason, e.reference)
                for e in ledger.history(account.id, limit=100)
            ),
        )
    return out


def test_a_batch_books_what_one_by_one_books(ledger: Ledger, twin: Ledger) -> None:
    held, lent, rich_id = _scenario(ledger)
    now = ledger.now()
    with ledger.core_transaction() as conn:
        done = settle(conn, held, lent, now)
    # the voided hold and the repeats are not the batch's to charge
    assert done == {held[i].hold_id for i in (0, 1, 3, 5)} | {c.hold_id for c in lent}

    held_twin, lent_twin, _ = _scenario(twin)
    for index, charge in enumerate(held_twin):
        if index not in (2, 4):  # the repeat, the voided hold
            twin.settle(charge.hold_id, charge.micro, charge.usage)
    for call in lent_twin[:3]:
        twin.settle_escrowed(call.hold_id, call.escrow_hold_id, call.account_id, call.micro, call.usage)

    assert _books(ledger) == _books(twin)
    assert ledger.audit() == [] and twin.audit() == []
    # the batch's rows carry its time, read back as written (SQLite's inserts bypass
    # SQLAlchemy's per-row parameters: the same conversion must still be applied)
    assert {u.created_at for u in ledger.usage(rich_id, limit=100)} == {now}
    batch_entries = [e for e in ledger.history(rich_id, limit=100) if e.created_at >= now]
    assert {e.kind for e in batch_entries} == {"charge", "release"}
    assert {e.created_at for e in batch_entries} == {now}
    call_hold = ledger.get_hold(lent[0].hold_id)
    assert (call_hold.status, call_hold.created_at, call_hold.expires_at) == ("settled", now, now)
    # and stored as the one-by-one path stores a time (SQLite compares them as text)
    assert _stored_time_shapes(ledger) == _stored_time_shapes(twin)


def _stored_time_shapes(ledger: Ledger) -> set[str]:
    """Each stored timestamp of the usage events, entries and holds, digits masked."""
    shapes: set[str] = set()
    with ledger.core_transaction() as conn:
        for table in ("usage_events", "entries", "holds"):
            for (stored,) in conn.exec_driver_sql(f"SELECT created_at FROM {table}"):
                shapes.add(re.sub(r"\d", "0", str(stored)))
    return shapes


def test_an_empty_batch_and_a_batch_of_repeats_write_nothing(ledger: Ledger) -> None:
    held, lent, rich = _scenario(ledger)
    with ledger.core_transaction() as conn:
        assert settle(conn, [], [], ledger.now()) == set()
        settle(conn, held, lent, ledger.now())
    before = ledger.balance(rich)
    with ledger.core_transaction() as conn:
        assert settle(conn, held, lent, ledger.now()) == set()
    assert ledger.balance(rich) == before


def test_the_sqlite_batch_insert_takes_rows_of_one_column_too(tmp_path: Path) -> None:
    from sqlalchemy import Column, MetaData, String, Table, create_engine, select

    from ledger.settle_batch_sqlite import _insert

    notes = Table("notes", MetaData(), Column("body", String, nullable=False))
    engine = create_engine(f"sqlite:///{tmp_path / 'one.db'}")
    notes.metadata.create_all(engine)
    with engine.begin() as conn:
        _insert(conn, notes, [{"body": "first"}, {"body": "second"}])
        assert conn.scalars(select(notes.c.body)).all() == ["first", "second"]
    engine.dispose()


# -- PostgreSQL: the batch in one statement (``settle_batch_function``) --------------------

ON_POSTGRES = pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def _covered_scenario(ledger: Ledger) -> tuple[list[PendingCharge], set[str]]:
    """Every account's first live grant covers its charges (the function's case); held
    and lent calls interleaved, with repeats, a voided hold, a free call, a call
    charged before, an escrow running out and a lent call without its account.

    Returns the batch and the hold ids it charges."""
    rich = ledger.open_account("user", "rich", tier="pro")
    small = ledger.open_account("user", "small", tier="pro")
    ledger.grant(rich.id, 30 * CR, source="purchase", priority=1, external_ref="r1")
    ledger.grant(rich.id, 10 * CR, source="purchase", external_ref="r2")
    ledger.grant(small.id, 5 * CR, source="purchase", external_ref="s1")
    escrow = ledger.hold(rich.id, 2 * CR, ttl_seconds=60, reference="escrow")
    holds = sorted(
        (ledger.hold(rich.id, CR, ttl_seconds=60) for _ in range(3)), key=lambda h: h.id, reverse=True
    )
    small_hold = ledger.hold(small.id, 500_000, ttl_seconds=60, reference="gpt-4o")
    voided = ledger.hold(rich.id, CR, ttl_seconds=60)
    ledger.void(voided.id)
    before = "d" * 32
    ledger.settle_escrowed(before, escrow.id, rich.id, 100_000, USAGE)

    def lent(call: str, micro: int, usage: UsageRecord = USAGE) -> PendingCharge:
        return PendingCharge(call, micro, usage, account_id=rich.id, escrow_hold_id=escrow.id)

    batch = [
        lent("c" * 31 + "1", 700_000),
        PendingCharge(holds[0].id, 1_500_000, USAGE),  # more than its hold
        lent("c" * 31 + "2", 1_000_000, ODD),
        PendingCharge(holds[1].id, 2_000_000, USAGE),
        PendingCharge(holds[1].id, 9_999, USAGE),  # a repeat: the first charge of a hold wins
        PendingCharge(small_hold.id, 400_000, ODD, account_id=small.id),
        lent("c" * 31 + "3", 900_000),  # the escrow has 200_000 left
        PendingCharge(voided.id, 300_000, USAGE),  # not open: left for the one-by-one path
        lent("c" * 31 + "1", 5),  # a repeat
        PendingCharge(holds[2].id, 0, ODD),  # free
        lent(before, 100_000),  # charged before
        PendingCharge("f" * 32, 60_000, USAGE, escrow_hold_id=escrow.id),  # no account: one by one
    ]
    charged = {batch[i].hold_id for i in (0, 1, 2, 3, 5, 6, 9)}
    return batch, charged


@ON_POSTGRES
def test_one_statement_books_what_one_by_one_books(ledger: Ledger, twin: Ledger) -> None:
    batch, charged = _covered_scenario(ledger)
    now = ledger.now()
    with ledger.core_statement(flush=False) as conn:
        done = settle_batch_function.settle(conn, batch, [c.to_line() for c in batch], now)
    assert done == charged

    twin_batch, twin_charged = _covered_scenario(twin)
    for charge in twin_batch:
        if charge.hold_id not in twin_charged or twin.unsettled([charge.hold_id]) == set():
            continue  # what the batch leaves, and the repeats
        if charge.escrow_hold_id is None:
            twin.settle(charge.hold_id, charge.micro, charge.usage)
        else:
            assert charge.account_id is not None
            twin.settle_escrowed(
                charge.hold_id, charge.escrow_hold_id, charge.account_id, charge.micro, charge.usage
            )

    assert _books(ledger) == _books(twin)
    assert ledger.audit() == [] and twin.audit() == []
    rich = ledger.find_account("user", "rich")
    assert rich is not None
    assert {u.created_at for u in ledger.usage(rich.id, limit=100) if u.hold_id in charged} == {now}
    call_hold = ledger.get_hold(batch[0].hold_id)
    assert (call_hold.status, call_hold.charged, call_hold.created_at) == ("settled", 700_000, now)
    # a second time, nothing is charged again
    before = _books(ledger)
    with ledger.core_statement(flush=False) as conn:
        assert settle_batch_function.settle(conn, batch, [c.to_line() for c in batch], ledger.now()) == set()
    assert _books(ledger) == before


def _entry_order(ledger: Ledger) -> list[tuple[object, ...]]:
    """The entries and usage events in the order they were written (ids); hold ids left
    out (a held call's differs in the twin)."""
    with ledger.core_transaction() as conn:
        entries = conn.exec_driver_sql(
            "SELECT account_id, kind, amount, held_delta, reason FROM entries ORDER BY id"
        ).all()
        events = conn.exec_driver_sql(
            "SELECT account_id, charged, user_id FROM usage_events ORDER BY id"
        ).all()
    return [tuple(row) for row in entries] + [tuple(row) for row in events]


def _as_journaled(held: list[OpenCharge], lent: list[LentCharge]) -> list[PendingCharge]:
    return [PendingCharge(c.hold_id, c.micro, c.usage) for c in held] + [
        PendingCharge(c.hold_id, c.micro, c.usage, account_id=c.account_id, escrow_hold_id=c.escrow_hold_id)
        for c in lent
    ]


@ON_POSTGRES
def test_a_batch_no_single_grant_covers_is_left_to_the_statements(ledger: Ledger, twin: Ledger) -> None:
    batch = _as_journaled(*_scenario(ledger)[:2])  # burns across grants, into debt
    before = _books(ledger)
    with pytest.raises(Unavailable) as why, ledger.core_statement(flush=False) as conn:
        settle_batch_function.settle(conn, batch, [c.to_line() for c in batch], ledger.now())
    assert why.value.args[0] == NEEDS_BURN_LOOP
    assert _books(ledger) == before  # nothing written
    # the journal's writer then books it statement by statement, grant by grant
    stats = JournalStats()
    apply_charges(ledger, batch, [c.to_line() for c in batch], stats)
    assert (stats.batches_in_function, ledger.batch_function) == (0, True)  # still on for the next
    twin_batch = _as_journaled(*_scenario(twin)[:2])
    twin.batch_function = False
    apply_charges(twin, twin_batch)
    assert _books(ledger) == _books(twin)


@ON_POSTGRES
def test_the_journal_books_its_batches_in_one_statement(ledger: Ledger, twin: Ledger) -> None:
    batch, _ = _covered_scenario(ledger)
    stats = JournalStats()
    apply_charges(ledger, batch, [c.to_line() for c in batch], stats)
    assert stats.batches_in_function == 1
    twin_batch, _ = _covered_scenario(twin)
    twin.batch_function = False  # the statements, as before the function
    twin_stats = JournalStats()
    apply_charges(twin, twin_batch, None, twin_stats)
    assert twin_stats.batches_in_function == 0
    assert _books(ledger) == _books(twin)
    assert _entry_order(ledger) == _entry_order(twin)


@ON_POSTGRES
def test_a_database_without_the_function_books_batches_as_statements(ledger: Ledger) -> None:
    batch, charged = _covered_scenario(ledger)
    with ledger.core_transaction() as conn:
        conn.exec_driver_sql(f"DROP FUNCTION {settle_batch_function.NAME}")
    stats = JournalStats()
    apply_charges(ledger, batch, [c.to_line() for c in batch], stats)
    assert ledger.batch_function is False  # noticed once: no failing call per batch after it
    assert stats.batches_in_function == 0
    assert ledger.unsettled(sorted(charged)) == set()
