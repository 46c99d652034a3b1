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

from ledger import Ledger
from ledger.settle_batch import LentCharge, OpenCharge, settle

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
