"""Engine set-up and failure handling: SQLite pragmas, masked URLs, outages."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from ledger_testlib import CR, USAGE, funded
from sqlalchemy import text

from ledger import Ledger, holds
from ledger.engine import make_engine, normalize_url
from pricing.errors import BillingUnavailable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sqlite_uses_wal_busy_timeout_and_foreign_keys(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


def test_in_memory_sqlite_works() -> None:
    book = Ledger("sqlite://")
    book.create_schema()
    acc = funded(book, CR)
    hold = book.hold(acc, 10, ttl_seconds=5)
    book.settle(hold.id, 10, USAGE)
    assert book.balance(acc).balance == CR - 10
    assert book.audit() == []
    book.dispose()


def test_url_is_masked_and_postgres_means_psycopg() -> None:
    book = Ledger("postgresql://billing:s3cret@db.example:5432/credits")
    assert "s3cret" not in book.url and "s3cret" not in repr(book)
    assert book.url.startswith("postgresql+psycopg://billing:***@db.example")
    book.dispose()
    assert normalize_url("postgres://x@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///a.db").drivername == "sqlite"


def test_unreachable_postgres_is_billing_unavailable() -> None:
    book = Ledger(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none?connect_timeout=2")
    with pytest.raises(BillingUnavailable) as error:
        book.balance(1)
    assert error.value.code == "billing_unavailable"
    with pytest.raises(BillingUnavailable):
        book.hold(1, 1, ttl_seconds=5)
    book.dispose()


def test_unopenable_sqlite_is_billing_unavailable(tmp_path: Path) -> None:
    book = Ledger(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    with pytest.raises(BillingUnavailable):
        book.balance(1)
    book.dispose()


def test_missing_schema_is_a_bug_not_an_outage(sqlite_url: str) -> None:
    book = Ledger(sqlite_url)
    with pytest.raises(Exception) as error:
        book.balance(1)
    assert not isinstance(error.value, BillingUnavailable)
    book.dispose()


def test_settle_recovers_from_a_lost_duplicate_race(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """If a twin's usage event lands between our check and our insert, the unique key wins."""
    acc = funded(ledger, CR)
    hold = ledger.hold(acc, 10, ttl_seconds=60)
    first = ledger.settle(hold.id, 7, USAGE)

    real = holds.existing_settlement
    calls = {"n": 0}

    def blind_once(session: object, hold_id: str) -> object:
        calls["n"] += 1
        return None if calls["n"] == 1 else real(session, hold_id)  # type: ignore[arg-type]

    monkeypatch.setattr(holds, "existing_settlement", blind_once)
    assert ledger.settle(hold.id, 7, USAGE) == first
    assert calls["n"] == 2
    assert ledger.balance(acc).balance == CR - 7
