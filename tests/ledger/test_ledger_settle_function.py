"""PostgreSQL's one-round-trip settles (``ledger.settle_function``): same books as the two
statements, the usual way when no single grant covers a charge or a function is
missing, each statement with its own snapshot, and migration 0003's frozen copy."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ledger_testlib import CR, LOCK_ACCOUNT, USAGE, funded, postgres_only, until_a_lock_is_awaited
from sqlalchemy import create_engine, event, text

from ledger import Ledger, Settlement, migrate, settle_batch_function, settle_function
from ledger.ids import new_hold_id
from ledger.journal import JournalStats, apply_charges
from ledger.outbox import PendingCharge


@pytest.fixture
def statements(ledger: Ledger) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()).split("(", 1)[0])

    def commit(_conn: Any) -> None:
        seen.append("COMMIT")

    engine = ledger._engine
    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "commit", commit)
    yield seen
    event.remove(engine, "before_cursor_execute", record)
    event.remove(engine, "commit", commit)


@postgres_only
def test_a_settle_is_one_statement_without_begin_or_commit(ledger: Ledger, statements: list[str]) -> None:
    acc = funded(ledger, 10 * CR)
    hold = ledger.hold(acc, 3 * CR, ttl_seconds=60)
    statements.clear()
    settled = ledger.settle(hold.id, 2 * CR, USAGE)
    assert statements == [f"SELECT * FROM {settle_function.SETTLE.name}"]
    assert (settled.held, settled.charged, settled.balance_after, settled.available_after) == (
        3 * CR,
        2 * CR,
        8 * CR,
        8 * CR,
    )
    assert settled.usage_event_id == ledger.usage(acc)[0].id
    assert [e.kind for e in ledger.history(acc, limit=4)] == ["charge", "release", "hold", "grant"]
    # the repeat writes nothing and returns the first settlement
    assert ledger.settle(hold.id, 2 * CR, USAGE) == settled
    assert ledger.balance(acc).balance == 8 * CR


@postgres_only
def test_a_charge_no_single_grant_covers_goes_the_usual_way(ledger: Ledger, statements: list[str]) -> None:
    acc = funded(ledger, 2 * CR)
    ledger.grant(acc, 1 * CR, source="bonus", priority=5)
    hold = ledger.hold(acc, 3 * CR, ttl_seconds=60)
    statements.clear()
    settled = ledger.settle(hold.id, 3 * CR + 5, USAGE)
    # the function rolled back, then the two statements and the grant-by-grant burn
    assert statements[0].startswith(f"SELECT * FROM {settle_function.SETTLE.name}")
    assert "COMMIT" in statements[1:]
    assert (settled.charged, settled.balance_after) == (3 * CR + 5, -5)
    assert [g.remaining for g in ledger.grants(acc)] == [0, 0]
    assert ledger.balance(acc).debt == 5
    assert len(ledger.usage(acc)) == 1
    assert ledger._settle_function  # still used for the next charge
    ledger.grant(acc, CR, source="purchase")
    hold = ledger.hold(acc, CR // 2, ttl_seconds=60)
    statements.clear()
    ledger.settle(hold.id, CR // 2, USAGE)
    assert len(statements) == 1


@postgres_only
def test_a_database_without_the_function_settles_the_usual_way(ledger: Ledger, db_url: str) -> None:
    engine = create_engine(db_url)
    with engine.begin() as conn:
        for function in settle_function.FUNCTIONS:
            conn.execute(text(f"DROP FUNCTION {function.name}"))
    engine.dispose()
    acc = funded(ledger, 10 * CR)
    first = ledger.hold(acc, CR, ttl_seconds=60)
    assert ledger.settle(first.id, CR // 2, USAGE).charged == CR // 2
    assert not ledger._settle_function  # noticed once, not asked again
    second = ledger.hold(acc, CR, ttl_seconds=60)
    ledger.settle(second.id, CR // 2, USAGE)
    assert ledger.balance(acc).balance == 9 * CR


@postgres_only
def test_an_escrowed_charge_is_one_statement(ledger: Ledger, statements: list[str]) -> None:
    acc = funded(ledger, 10 * CR)
    escrow = ledger.hold(acc, 3 * CR, ttl_seconds=60, reference="escrow")
    call = new_hold_id()
    statements.clear()
    settled = ledger.settle_escrowed(call, escrow.id, acc, 2 * CR, USAGE, reference="gpt-4o")
    assert statements == [f"SELECT * FROM {settle_function.SETTLE_ESCROWED.name}"]
    assert (settled.hold_id, settled.held, settled.charged) == (call, 0, 2 * CR)
    assert (settled.balance_after, settled.available_after) == (8 * CR, 7 * CR)
    assert ledger.get_hold(escrow.id).amount == CR  # 2 credits lent out of 3
    assert [e.kind for e in ledger.history(acc, limit=3)] == ["charge", "release", "hold"]
    # a repeat writes nothing and returns the first settlement
    assert ledger.settle_escrowed(call, escrow.id, acc, 2 * CR, USAGE, reference="gpt-4o") == settled
    # more than the escrow has left: it gives what it has, the balance pays the rest
    more = ledger.settle_escrowed(new_hold_id(), escrow.id, acc, 2 * CR, USAGE)
    assert (more.balance_after, more.available_after) == (6 * CR, 6 * CR)
    assert ledger.get_hold(escrow.id).amount == 0
    ledger.void(escrow.id)


@postgres_only
def test_an_escrowed_charge_no_single_grant_covers_goes_the_usual_way(
    ledger: Ledger, statements: list[str]
) -> None:
    acc = funded(ledger, 2 * CR)
    ledger.grant(acc, 1 * CR, source="bonus", priority=5)
    escrow = ledger.hold(acc, 3 * CR, ttl_seconds=60, reference="escrow")
    statements.clear()
    settled = ledger.settle_escrowed(new_hold_id(), escrow.id, acc, 3 * CR + 5, USAGE)
    assert statements[0].startswith(f"SELECT * FROM {settle_function.SETTLE_ESCROWED.name}")
    assert "COMMIT" in statements[1:]
    assert (settled.charged, settled.balance_after) == (3 * CR + 5, -5)
    assert ledger.balance(acc).debt == 5
    assert ledger._settle_function
    ledger.void(escrow.id)


@postgres_only
def test_the_grant_is_chosen_after_the_account_lock_as_in_two_statements(ledger: Ledger, db_url: str) -> None:
    """An admin's grant change committed while the settle waits for the account's lock
    decides the grant it burns: statement 2 has a snapshot of its own, in the function too."""
    acc = funded(ledger, 5 * CR)  # the purchase grant, priority 0
    bonus = ledger.grant(acc, 5 * CR, source="bonus", priority=1)
    purchase = next(g for g in ledger.grants(acc) if g.id != bonus.id)
    hold = ledger.hold(acc, CR, ttl_seconds=60)

    engine = create_engine(db_url, pool_size=2, max_overflow=0)
    done: list[Settlement] = []
    settler = threading.Thread(target=lambda: done.append(ledger.settle(hold.id, CR, USAGE)))
    try:
        with engine.connect() as admin, engine.connect() as probe:
            probe = probe.execution_options(isolation_level="AUTOCOMMIT")
            admin.execute(LOCK_ACCOUNT, {"a": acc})
            admin.execute(text("UPDATE grants SET priority = 9 WHERE id = :g"), {"g": purchase.id})
            settler.start()
            until_a_lock_is_awaited(probe)
            assert not done
            admin.commit()
    finally:
        settler.join(10)
        engine.dispose()
    assert done and done[0].charged == CR
    left = {g.id: g.remaining for g in ledger.grants(acc)}
    assert (left[purchase.id], left[bonus.id]) == (4 * CR, 5 * CR)


def _migration(name: str) -> Any:
    path = migrate.MIGRATIONS_DIR / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migration_0003_creates_the_functions_the_code_calls() -> None:
    """A change to hotpath's settle statements fails here: it needs a new function version
    (``NAME``) and a migration creating it, or databases migrated earlier would run the old."""
    assert settle_function.create_sql() == _migration("0003_settle_functions").CREATE_FUNCTIONS


def test_migration_0004_creates_the_batch_function_the_code_calls() -> None:
    """As for 0003: the journal's batch function changes only with a new version and migration."""
    assert settle_batch_function.create_sql() == _migration("0004_settle_batch_function").CREATE_FUNCTION


@pytest.mark.postgres
def test_migrations_create_and_drop_the_functions(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    book = Ledger(pg_url)
    try:
        acc = funded(book, 10 * CR)
        hold = book.hold(acc, CR, ttl_seconds=60)
        assert book.settle(hold.id, CR, USAGE).charged == CR
        escrow = book.hold(acc, 2 * CR, ttl_seconds=60, reference="escrow")
        assert book.settle_escrowed(new_hold_id(), escrow.id, acc, CR, USAGE).charged == CR
        # the journal's batch function (0004), on a batch the first grant covers
        journaled = [book.hold(acc, CR, ttl_seconds=60) for _ in range(2)]
        stats = JournalStats()
        assert apply_charges(book, [PendingCharge(h.id, 1000, USAGE) for h in journaled], None, stats) == 0
        assert stats.batches_in_function == 1
        book.void(escrow.id)
        assert book._settle_function
        assert book.audit() == []
    finally:
        book.dispose()
    migrate.downgrade(pg_url, "0002")
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            for name in [f.name for f in settle_function.FUNCTIONS] + [settle_batch_function.NAME]:
                assert conn.execute(text(f"SELECT to_regproc('{name}')")).scalar_one() is None
    finally:
        engine.dispose()


def test_schema_sql_holds_the_functions() -> None:
    schema = (Path(__file__).resolve().parents[2] / "schema.sql").read_text()
    assert settle_function.create_sql() in schema
    assert settle_batch_function.create_sql() in schema
