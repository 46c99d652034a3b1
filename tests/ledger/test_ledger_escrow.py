"""The hot-account path (``ledger.escrow``) and its charges (``Ledger.settle_escrowed``):
each test on both escrow stores (in memory, and real Redis) where it is about the
book, with real SQLite and PostgreSQL. Every test ends with the books balancing to the µcr."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from ledger_testlib import (
    CR,
    LOCK_ACCOUNT,
    USAGE,
    funded,
    postgres_only,
    sqlite_only,
    until_a_lock_is_awaited,
)
from sqlalchemy import create_engine, exc, text

from ledger import Hold, Ledger
from ledger.escrow import EscrowBook
from ledger.escrow_memory import SWEEP_EVERY_MS, MemoryEscrowStore
from ledger.escrow_redis import RedisEscrowStore
from ledger.escrow_store import Current, EscrowStore, NewEscrow
from pricing.errors import AccountNotFound, InvalidOperation

MakeBook = Callable[..., EscrowBook]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make_store(request: pytest.FixtureRequest) -> Callable[[], EscrowStore]:
    """New stores of one kind: Redis ones share the test's keys (replicas on one Redis),
    memory ones share nothing (each is one proxy process)."""
    if request.param == "memory":
        return MemoryEscrowStore
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    return lambda: RedisEscrowStore(url, prefix=prefix)


@pytest.fixture
def make_book(make_store: Callable[[], EscrowStore]) -> Iterator[MakeBook]:
    """Escrow books, each on a store of its own (TTL 60 s, 10 calls an escrow, rich at 8x)."""
    made: list[EscrowBook] = []

    def make(ledger: Ledger, **options: Any) -> EscrowBook:
        options = {"ttl_seconds": 60, "calls_per_escrow": 10, "rich_factor": 8, **options}
        book = EscrowBook(ledger, make_store(), **options)
        made.append(book)
        return book

    yield make
    for book in made:
        book.close()


@pytest.fixture
def rds(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clocked(db_url: str) -> Iterator[tuple[Ledger, Clock]]:
    """A ledger whose time the test moves; the books must balance afterwards."""
    clock = Clock()
    book = Ledger(db_url, clock=clock)
    book.create_schema()
    try:
        yield book, clock
        assert book.audit() == []
    finally:
        book.dispose()


def forget_keys(client: redis.Redis, prefix: str) -> None:
    """What a Redis flush or restart does to the escrow's keys."""
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def current(book: EscrowBook, ledger: Ledger, account_id: int) -> Current:
    found = book.store.current(account_id, ms(ledger.now()))
    assert found is not None
    return found


def loan_of(book: EscrowBook, account_id: int, micro: int) -> Hold:
    loan = book.lend(account_id, micro)
    assert loan is not None and loan.escrow_hold_id is not None
    return loan


def escrow_releases(ledger: Ledger, account_id: int) -> dict[str, int]:
    """µcr each call took from its escrow, from the release entries ``settle_escrowed`` wrote."""
    return {
        e.reason.removeprefix("lent to call "): -e.held_delta
        for e in ledger.history(account_id, limit=100_000)
        if e.kind == "release" and e.reason.startswith("lent to call ")
    }


# -- one call ------------------------------------------------------------------------------


def test_lend_settle_give_back_is_exact(ledger: Ledger, make_book: MakeBook) -> None:
    acc = funded(ledger, CR)
    book = make_book(ledger)
    loan = loan_of(book, acc, 1000)
    assert (loan.account_id, loan.amount, loan.status, loan.charged) == (acc, 1000, "open", None)
    assert len(loan.id) == 32 and loan.id != loan.escrow_hold_id
    escrow = ledger.get_hold(loan.escrow_hold_id or "")
    assert (escrow.amount, escrow.status, escrow.reference) == (10_000, "open", "escrow")
    # never later than the escrow (renewed once right after it was placed, to flush it)
    assert loan.expires_at <= escrow.expires_at < loan.expires_at + timedelta(seconds=1)
    # the account's available after the escrow, plus what the escrow has not lent
    assert loan.available_after == (CR - 10_000) + 9_000
    b = ledger.balance(acc)
    assert (b.balance, b.held) == (CR, 10_000)

    settled = ledger.settle_escrowed(loan.id, loan.escrow_hold_id or "", acc, 700, USAGE)
    assert (settled.hold_id, settled.account_id, settled.held, settled.charged, settled.late) == (
        loan.id,
        acc,
        0,
        700,
        False,
    )
    assert (settled.balance_after, settled.available_after) == (CR - 700, CR - 700 - 9_300)
    book.give_back(loan, 700)

    assert (current(book, ledger, acc).rem, current(book, ledger, acc).inf) == (9_300, 0)
    assert ledger.get_hold(escrow.id).amount == 9_300
    b = ledger.balance(acc)
    assert (b.balance, b.held, b.debt) == (CR - 700, 9_300, 0)
    call = ledger.get_hold(loan.id)
    assert (call.status, call.amount, call.charged) == ("settled", 0, 700)
    (event,) = ledger.usage(acc)
    assert (event.hold_id, event.charged) == (loan.id, 700)
    assert [(e.kind, e.hold_id, e.amount, e.held_delta) for e in ledger.history(acc, limit=3)] == [
        ("charge", loan.id, -700, 0),
        ("release", escrow.id, 0, -700),
        ("hold", escrow.id, 0, 10_000),
    ]

    # the next call borrows from the same escrow; what came back is lent again
    again = loan_of(book, acc, 1000)
    assert again.escrow_hold_id == escrow.id
    assert again.available_after == (CR - 10_000) + 8_300
    book.give_back(again, 0)  # failed call: nothing charged, all of it back
    assert current(book, ledger, acc).rem == 9_300
    assert ledger.audit() == []


def test_unlent_is_what_the_escrow_still_has_to_lend(ledger: Ledger, make_book: MakeBook) -> None:
    acc = funded(ledger, CR)
    book = make_book(ledger)
    assert book.unlent(acc) == 0  # no escrow yet
    loan = loan_of(book, acc, 1000)
    other = loan_of(book, acc, 1000)
    assert book.unlent(acc) == 10_000 - 2_000
    ledger.settle_escrowed(loan.id, loan.escrow_hold_id or "", acc, 700, USAGE)
    book.give_back(loan, 700)
    book.give_back(other, 0)
    assert book.unlent(acc) == 10_000 - 700
    assert ledger.escrowed(acc) == 10_000 - 700  # the escrow's hold, as the admin CLI shows it
    # the ledger holds exactly that for the escrow: a balance shown to a person may add it back
    b = ledger.balance(acc)
    assert (b.held - book.unlent(acc), b.available + book.unlent(acc)) == (0, CR - 700)


def test_a_stopping_process_gives_back_what_its_escrows_did_not_lend(
    ledger: Ledger, make_book: MakeBook
) -> None:
    acc = funded(ledger, CR)
    book = make_book(ledger)
    loan = loan_of(book, acc, 1000)
    running = loan_of(book, acc, 1000)
    ledger.settle_escrowed(loan.id, loan.escrow_hold_id or "", acc, 700, USAGE)
    book.give_back(loan, 700)
    if not book.instant:  # a Redis escrow is the replicas' together: it stays
        assert book.give_back_unlent() == 0
        book.give_back(running, 0)
        return
    assert book.give_back_unlent() == 0  # a call still borrows from it: it keeps lending
    book.give_back(running, 0)
    assert book.give_back_unlent() == 10_000 - 700
    b = ledger.balance(acc)
    assert (b.balance, b.held) == (CR - 700, 0)
    assert book.unlent(acc) == 0 and book.give_back_unlent() == 0  # once
    assert loan_of(book, acc, 1000).escrow_hold_id != loan.escrow_hold_id  # a new one


def test_settle_escrowed_twice_charges_once(ledger: Ledger, make_book: MakeBook) -> None:
    acc = funded(ledger, CR)
    book = make_book(ledger)
    loan = loan_of(book, acc, 1000)
    escrow_id = loan.escrow_hold_id or ""
    first = ledger.settle_escrowed(loan.id, escrow_id, acc, 800, USAGE)
    # a repeat (the outbox replaying, a second hook), whatever its amount, changes nothing
    assert ledger.settle_escrowed(loan.id, escrow_id, acc, 5_000, USAGE) == first
    assert ledger.settle(loan.id, 5_000, USAGE) == first
    assert ledger.void(loan.id) is False
    b = ledger.balance(acc)
    assert (b.balance, b.held) == (CR - 800, 10_000 - 800)
    assert ledger.get_hold(escrow_id).amount == 10_000 - 800
    assert len(ledger.usage(acc)) == 1
    other = funded(ledger, CR, external_id="mallory")
    with pytest.raises(InvalidOperation):
        ledger.settle_escrowed(loan.id, escrow_id, other, 800, USAGE)
    book.give_back(loan, 800)


def test_settle_escrowed_validates(ledger: Ledger, make_book: MakeBook) -> None:
    acc = funded(ledger, CR)
    loan = loan_of(make_book(ledger), acc, 1000)
    escrow_id = loan.escrow_hold_id or ""
    with pytest.raises(AccountNotFound):
        ledger.settle_escrowed("a" * 32, escrow_id, 9_999, 10, USAGE)
    with pytest.raises(InvalidOperation):
        ledger.settle_escrowed("x" * 33, escrow_id, acc, 10, USAGE)
    with pytest.raises(InvalidOperation):
        ledger.settle_escrowed("", escrow_id, acc, 10, USAGE)
    with pytest.raises(InvalidOperation):
        ledger.settle_escrowed(loan.id, escrow_id, acc, -1, USAGE)
    with pytest.raises(InvalidOperation):
        ledger.shrink_hold(escrow_id, -1)
    # another account's escrow gives nothing: the call is charged to its own account only
    other = funded(ledger, CR, external_id="bob")
    ledger.settle_escrowed("b" * 32, escrow_id, other, 300, USAGE)
    assert ledger.get_hold(escrow_id).amount == 10_000
    assert ledger.balance(other).balance == CR - 300
    ledger.void(escrow_id)


def test_a_call_that_costs_more_than_its_loan(ledger: Ledger, make_book: MakeBook) -> None:
    """The overage comes out of the escrow and out of what Redis may still lend, alike."""
    acc = funded(ledger, CR)
    book = make_book(ledger)
    loan = loan_of(book, acc, 1000)
    ledger.settle_escrowed(loan.id, loan.escrow_hold_id or "", acc, 1_500, USAGE)
    book.give_back(loan, 1_500)
    assert current(book, ledger, acc).rem == ledger.get_hold(loan.escrow_hold_id or "").amount == 8_500


# -- who gets an escrow --------------------------------------------------------------------


def test_a_poor_account_gets_no_escrow(ledger: Ledger, make_book: MakeBook) -> None:
    acc = funded(ledger, 79_999)  # an escrow of 10 x 1000 needs 8 x 10_000 available
    book = make_book(ledger, poor_recheck_seconds=0.05)
    assert book.lend(acc, 1000) is None
    assert ledger.balance(acc).held == 0
    ledger.grant(acc, 1, source="purchase")
    threading.Event().wait(0.06)  # every replica looks again after the recheck delay
    loan = loan_of(book, acc, 1000)
    assert book.lend(acc, 0) is None  # a free call needs no credit
    assert ledger.balance(acc).held == 10_000
    ledger.void(loan.escrow_hold_id or "")


def test_an_unknown_account_gets_no_escrow(ledger: Ledger, make_book: MakeBook) -> None:
    assert make_book(ledger).lend(4_242, 1000) is None


@sqlite_only
def test_redis_unreachable_falls_back_to_ordinary_holds(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    acc = funded(ledger, CR)
    book = EscrowBook.on_redis(ledger, "redis://127.0.0.1:1/0", ttl_seconds=60)
    try:
        with caplog.at_level(logging.WARNING, logger="credits.escrow"):
            assert book.lend(acc, 1000) is None
            assert book.lend(acc, 1000) is None
            now = datetime.now(UTC)
            lost = Hold("c" * 32, acc, 1000, "open", now, "", None, now, None, escrow_hold_id="e" * 32)
            book.give_back(lost, 0)
        assert len([r for r in caplog.records if r.name == "credits.escrow"]) == 1  # once a minute
        assert ledger.balance(acc).held == 0
    finally:
        book.close()


# -- replacing, expiring and renewing escrows ------------------------------------------------


def test_a_replaced_escrow_gives_its_leftover_back(ledger: Ledger, make_book: MakeBook) -> None:
    acc = funded(ledger, CR)
    book = make_book(ledger, calls_per_escrow=4)
    first = [loan_of(book, acc, 1000) for _ in range(2)]
    old = first[0].escrow_hold_id or ""
    # too big for what is left (2000): a new escrow; the 2000 nobody borrowed goes back now
    big = loan_of(book, acc, 2_500)
    assert big.escrow_hold_id != old
    assert ledger.get_hold(old).amount == 2_000
    assert book.lend(acc, 1000) is not None  # lends from the new one only

    # the old escrow's calls end: one charged before its give back, one after (a journal)
    ledger.settle_escrowed(first[0].id, old, acc, 600, USAGE)
    book.give_back(first[0], 600)
    book.give_back(first[1], 900)
    # the last give back shrank the old escrow to what is still to be charged
    assert ledger.get_hold(old).amount == 900
    ledger.settle_escrowed(first[1].id, old, acc, 900, USAGE)
    assert ledger.get_hold(old).amount == 0
    assert escrow_releases(ledger, acc) == {first[0].id: 600, first[1].id: 900}
    b = ledger.balance(acc)
    assert (b.balance, b.held) == (CR - 1_500, 10_000)  # the new escrow, whole


def test_the_next_escrow_is_opened_before_the_current_runs_dry(ledger: Ledger, make_book: MakeBook) -> None:
    acc = funded(ledger, CR)
    book = make_book(ledger, calls_per_escrow=8)  # escrows of 8000, low watermark 2000
    loans = [loan_of(book, acc, 1000) for _ in range(6)]
    first = loans[0].escrow_hold_id or ""
    assert {loan.escrow_hold_id for loan in loans} == {first}
    assert current(book, ledger, acc).rem == 2_000  # not below the watermark yet
    # this loan leaves 1000: it still borrows from this escrow, and has the next one opened
    loans.append(loan_of(book, acc, 1000))
    assert loans[-1].escrow_hold_id == first
    book.wait_refills()
    now = current(book, ledger, acc)
    assert now.id != first and (now.rem, now.inf) == (8_000, 0)
    # the 1000 nobody borrowed went back at once; the 7 calls still running keep theirs
    assert ledger.get_hold(first).amount == 7_000
    assert ledger.get_hold(now.id).amount == 8_000
    loans.append(loan_of(book, acc, 1000))
    assert loans[-1].escrow_hold_id == now.id
    assert current(book, ledger, acc).rem == 7_000  # one watermark crossing, one refill

    for n, loan in enumerate(loans):
        used = 100 * n
        if used:
            ledger.settle_escrowed(loan.id, loan.escrow_hold_id or "", acc, used, USAGE)
        book.give_back(loan, used)
    # the old escrow's last call came back: it holds nothing more (every charge is applied)
    assert ledger.get_hold(first).amount == 0
    assert (current(book, ledger, acc).rem, current(book, ledger, acc).inf) == (8_000 - 700, 0)
    b = ledger.balance(acc)
    assert (b.balance, b.held) == (CR - 2_800, 8_000 - 700)
    ledger.void(now.id)


def test_too_poor_for_the_next_escrow_lends_on_from_the_current(ledger: Ledger, make_book: MakeBook) -> None:
    # rich enough for one escrow of 8000 at 8x (64_000), not for a second beside it
    acc = funded(ledger, 69_000)
    book = make_book(ledger, calls_per_escrow=8)
    loans = [loan_of(book, acc, 1000) for _ in range(8)]
    book.wait_refills()
    assert len({loan.escrow_hold_id for loan in loans}) == 1
    assert ledger.balance(acc).held == 8_000  # no second escrow was placed
    assert book.lend(acc, 1000) is None  # dry, and marked poor: ordinary holds now
    for loan in loans:
        book.give_back(loan, 0)
    ledger.void(loans[0].escrow_hold_id or "")


def test_an_expired_escrow_is_charged_late_and_not_lent_from(
    clocked: tuple[Ledger, Clock], make_book: MakeBook
) -> None:
    ledger, clock = clocked
    acc = funded(ledger, CR)
    book = make_book(ledger)
    done, running = loan_of(book, acc, 1000), loan_of(book, acc, 1000)
    escrow_id = done.escrow_hold_id or ""
    ledger.settle_escrowed(done.id, escrow_id, acc, 400, USAGE)
    book.give_back(done, 400)

    clock.advance(61)
    assert ledger.expire_stale_holds() == 1
    assert ledger.balance(acc).held == 0
    # the call still running when its escrow expired is charged all the same, once
    late = ledger.settle_escrowed(running.id, escrow_id, acc, 500, USAGE)
    assert ledger.settle_escrowed(running.id, escrow_id, acc, 500, USAGE) == late
    assert escrow_releases(ledger, acc) == {done.id: 400}  # nothing taken from the expired one
    b = ledger.balance(acc)
    assert (b.balance, b.held) == (CR - 900, 0)

    fresh = loan_of(book, acc, 1000)
    assert fresh.escrow_hold_id not in (None, escrow_id)
    book.give_back(running, 500)  # the expired escrow's last call: nothing left to shrink
    assert current(book, ledger, acc).id == fresh.escrow_hold_id
    ledger.void(fresh.escrow_hold_id or "")


def test_the_store_stops_lending_before_postgresql_expires(
    clocked: tuple[Ledger, Clock], make_book: MakeBook
) -> None:
    ledger, clock = clocked
    acc = funded(ledger, CR)
    book = make_book(ledger)
    loan = loan_of(book, acc, 1000)
    escrow = ledger.get_hold(loan.escrow_hold_id or "")
    assert current(book, ledger, acc).until == ms(escrow.expires_at) - 6_000  # a margin before
    # past the margin but before the hold's expiry: Redis lends from a new escrow
    clock.advance(55)
    assert ledger.expire_stale_holds() == 0
    assert loan_of(book, acc, 1000).escrow_hold_id != escrow.id
    book.give_back(loan, 0)
    if isinstance(book.store, RedisEscrowStore):
        # Redis expires the escrow's hash in real time (the test moved only the ledger's
        # clock): its unlent credit went back when it was replaced, the rest now
        assert ledger.get_hold(escrow.id).amount == 0
    else:
        # forgotten at its deadline on the ledger's clock, as Redis does in production:
        # what it held stays held until PostgreSQL expires it
        assert ledger.get_hold(escrow.id).amount == 10_000
        ledger.void(escrow.id)


@sqlite_only
@pytest.mark.redis
def test_the_redis_hash_expires_a_margin_before_the_hold(
    ledger: Ledger, redis_url: str, redis_prefix: str, rds: redis.Redis
) -> None:
    acc = funded(ledger, CR)
    store = RedisEscrowStore(redis_url, prefix=redis_prefix)
    book = EscrowBook(ledger, store, ttl_seconds=60, calls_per_escrow=10)
    try:
        loan = loan_of(book, acc, 1000)
        assert 0 < rds.pttl(store.key(acc)) <= (60 - 6) * 1000
        assert rds.hget(store.key(acc), "id") == loan.escrow_hold_id
        ledger.void(loan.escrow_hold_id or "")
    finally:
        book.close()


def test_lending_renews_the_escrow(clocked: tuple[Ledger, Clock], make_book: MakeBook) -> None:
    ledger, clock = clocked
    acc = funded(ledger, CR)
    book = make_book(ledger)
    escrow_id = loan_of(book, acc, 1000).escrow_hold_id or ""
    first_expiry = ledger.get_hold(escrow_id).expires_at
    clock.advance(20)
    assert loan_of(book, acc, 1000).escrow_hold_id == escrow_id
    assert ledger.get_hold(escrow_id).expires_at == first_expiry  # more than half its TTL left
    clock.advance(15)
    assert loan_of(book, acc, 1000).escrow_hold_id == escrow_id
    renewed = ledger.get_hold(escrow_id).expires_at
    assert renewed == clock.now + timedelta(seconds=60)
    assert current(book, ledger, acc).until == ms(renewed - timedelta(seconds=6))
    clock.advance(40)  # past the first expiry, not the renewed one
    assert ledger.expire_stale_holds() == 0
    assert loan_of(book, acc, 1000).escrow_hold_id == escrow_id
    ledger.void(escrow_id)


def test_a_voided_escrow_is_dropped_when_lending_would_renew_it(
    clocked: tuple[Ledger, Clock], make_book: MakeBook
) -> None:
    ledger, clock = clocked
    acc = funded(ledger, CR)
    book = make_book(ledger)
    running = loan_of(book, acc, 1000)
    escrow_id = running.escrow_hold_id or ""
    assert ledger.void(escrow_id, "voided by an operator") is True
    clock.advance(31)  # less than half its TTL left: the next lend renews it, and cannot
    fresh = loan_of(book, acc, 1000)
    assert fresh.escrow_hold_id not in (None, escrow_id)
    assert current(book, ledger, acc).id == fresh.escrow_hold_id
    ledger.settle_escrowed(running.id, escrow_id, acc, 700, USAGE)  # late: balance only
    book.give_back(running, 700)
    b = ledger.balance(acc)
    assert (b.balance, b.held) == (CR - 700, 10_000)
    ledger.void(fresh.escrow_hold_id or "")


def test_the_memory_store_sweeps_records_nobody_asks_about() -> None:
    """Redis frees an expired hash by itself; the memory store drops them now and then."""
    store = MemoryEscrowStore()

    def escrow(escrow_id: str, until: int) -> NewEscrow:
        return NewEscrow(escrow_id, 100, 0, 25, until, until, until + 1000, 0, 0)

    store.install(1, escrow("a", until=1_000), now_ms=0)
    store.install(2, escrow("b", until=500_000), now_ms=10)  # not time for a sweep yet
    assert store.current(1, now_ms=0) is not None
    store.install(3, escrow("c", until=500_000), now_ms=SWEEP_EVERY_MS + 1)
    assert store.current(1, now_ms=0) is None  # swept: past its deadline
    assert store.current(2, now_ms=0) is not None
    assert store.acquire(2, "t", ttl_ms=60_000) == "t" and store.holder(2) == "t"
    store.release(2, "t", "", 0)
    assert store.holder(2) is None


# -- lock order: escrow hold, then account (PostgreSQL) --------------------------------------

LOCK_HOLD = text("SELECT id FROM holds WHERE id = :h FOR UPDATE")


@postgres_only
@pytest.mark.parametrize("operation", ["settle_escrowed", "shrink"])
def test_escrow_writes_lock_the_hold_before_the_account(ledger: Ledger, db_url: str, operation: str) -> None:
    acc = funded(ledger, CR)
    book = EscrowBook.in_memory(ledger, ttl_seconds=60, calls_per_escrow=10)
    loan = loan_of(book, acc, 1000)
    escrow_id = loan.escrow_hold_id or ""
    run: Callable[[], object] = {
        "settle_escrowed": lambda: ledger.settle_escrowed(loan.id, escrow_id, acc, 700, USAGE),
        "shrink": lambda: ledger.shrink_hold(escrow_id, 500),
    }[operation]
    engine = create_engine(db_url, pool_size=2, max_overflow=0)
    try:
        with engine.connect() as blocker, engine.connect() as probe:
            probe = probe.execution_options(isolation_level="AUTOCOMMIT")
            blocker.execute(LOCK_ACCOUNT, {"a": acc})
            worker = threading.Thread(target=run)
            worker.start()
            until_a_lock_is_awaited(probe)
            # it waits for the account while it holds the escrow hold already
            with pytest.raises(exc.OperationalError, match="could not obtain lock"):
                probe.execute(text("SELECT id FROM holds WHERE id = :h FOR UPDATE NOWAIT"), {"h": escrow_id})
            blocker.rollback()
            worker.join()
    finally:
        engine.dispose()
    book.give_back(loan, 700 if operation == "settle_escrowed" else 0)
    ledger.void(escrow_id)
    book.close()


@postgres_only
def test_lending_goes_on_while_the_next_escrow_waits_for_the_account(
    ledger: Ledger, db_url: str, make_book: MakeBook
) -> None:
    """What a settle journal batch does to a refill: it holds the account's row a while."""
    acc = funded(ledger, CR)
    book = make_book(ledger, calls_per_escrow=8)
    loans = [loan_of(book, acc, 1000) for _ in range(6)]
    first = loans[0].escrow_hold_id
    engine = create_engine(db_url, pool_size=2, max_overflow=0)
    try:
        with engine.connect() as blocker, engine.connect() as probe:
            probe = probe.execution_options(isolation_level="AUTOCOMMIT")
            blocker.execute(LOCK_ACCOUNT, {"a": acc})
            loans.append(loan_of(book, acc, 1000))  # below the watermark: a refill starts
            until_a_lock_is_awaited(probe)  # ... and waits for the account
            loans.append(loan_of(book, acc, 1000))  # lending goes on meanwhile
            assert {loan.escrow_hold_id for loan in loans} == {first}
            blocker.rollback()
            book.wait_refills()
    finally:
        engine.dispose()
    fresh = loan_of(book, acc, 1000)
    assert fresh.escrow_hold_id != first
    for loan in [*loans, fresh]:
        book.give_back(loan, 0)
    assert ledger.get_hold(first or "").amount == 0
    ledger.void(fresh.escrow_hold_id or "")


@postgres_only
def test_a_shrink_that_loses_a_deadlock_is_tried_again(
    ledger: Ledger, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    acc = funded(ledger, CR)
    book = EscrowBook.in_memory(ledger, ttl_seconds=60, calls_per_escrow=4)
    first = loan_of(book, acc, 1000)
    old = first.escrow_hold_id or ""
    big = loan_of(book, acc, 3_500)  # too big for what is left: a new escrow, the old one shrunk
    assert ledger.get_hold(old).amount == 1_000
    engine = create_engine(db_url, pool_size=2, max_overflow=0)
    try:
        with (
            caplog.at_level(logging.INFO, logger="credits.escrow"),
            engine.connect() as blocker,
            engine.connect() as probe,
        ):
            probe = probe.execution_options(isolation_level="AUTOCOMMIT")
            blocker.execute(LOCK_ACCOUNT, {"a": acc})
            # the old escrow's last call gives back: its shrink locks the hold, waits for the account
            worker = threading.Thread(target=book.give_back, args=(first, 0))
            worker.start()
            until_a_lock_is_awaited(probe)
            # ... while this waits for the hold: a deadlock. PostgreSQL rolls back the
            # shrink (it has waited longer, so its check runs first); this goes on.
            blocker.execute(LOCK_HOLD, {"h": old})
            blocker.commit()
            worker.join()
    finally:
        engine.dispose()
    assert "shrink lost a lock conflict" in caplog.text
    assert "keeps" not in caplog.text
    assert ledger.get_hold(old).amount == 0  # shrunk all the same
    assert ledger.balance(acc).held == 4 * 3_500
    book.give_back(big, 0)
    ledger.void(big.escrow_hold_id or "")
    book.close()


# -- replicas, threads, a flush --------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    call_id: str
    escrow_id: str | None
    used: int


THREADS = 8
CALLS = 25


def test_two_replicas_never_lend_more_than_is_escrowed(db_url: str, make_book: MakeBook) -> None:
    """On Redis the replicas share each escrow; in memory each lends from escrows of its own."""
    replicas_never_overspend(db_url, make_book, lambda: None)


@pytest.mark.redis
@pytest.mark.parametrize("make_store", ["redis"], indirect=True)
def test_two_replicas_never_overspend_when_redis_is_flushed_mid_run(
    db_url: str, make_book: MakeBook, rds: redis.Redis, redis_prefix: str
) -> None:
    replicas_never_overspend(db_url, make_book, lambda: forget_keys(rds, redis_prefix))


def replicas_never_overspend(db_url: str, make_book: MakeBook, mid_run: Callable[[], None]) -> None:
    """Two replicas, 4 threads each, on one account; ``mid_run`` happens halfway through."""
    ledgers = [Ledger(db_url, pool_size=4, max_overflow=1, pool_timeout=30) for _ in range(2)]
    ledgers[0].create_schema()
    try:
        acc = funded(ledgers[0], 5 * CR)
        books = [make_book(replica, calls_per_escrow=10, rich_factor=2) for replica in ledgers]
        calls: list[Call] = []
        lock = threading.Lock()
        start = threading.Barrier(THREADS)

        def replica_thread(t: int) -> None:
            book, ledger = books[t % 2], ledgers[t % 2]
            start.wait()
            for n in range(CALLS):
                if t == 0 and n == CALLS // 2:
                    mid_run()
                micro = 1000 + 500 * ((t + n) % 3)
                used = (micro, micro - 300, 0)[(7 * t + n) % 3]
                loan = book.lend(acc, micro)
                if loan is None:  # an ordinary hold, as the gate does
                    hold = ledger.hold(acc, micro, ttl_seconds=60)
                    if used:
                        ledger.settle(hold.id, used, USAGE)
                    else:
                        ledger.void(hold.id)
                    call = Call(hold.id, None, used)
                else:
                    if used:
                        ledger.settle_escrowed(loan.id, loan.escrow_hold_id or "", acc, used, USAGE)
                    book.give_back(loan, used)
                    call = Call(loan.id, loan.escrow_hold_id, used)
                with lock:
                    calls.append(call)

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(replica_thread, range(THREADS)))
        for book in books:
            book.wait_refills()  # the audit reads the books at rest

        ledger = ledgers[0]
        assert len(calls) == THREADS * CALLS
        lent = [c for c in calls if c.escrow_id is not None]
        assert len(lent) > len(calls) // 2
        b = ledger.balance(acc)
        assert b.balance == 5 * CR - sum(c.used for c in calls)
        assert ledger.audit() == []

        # every charge was covered by its escrow in full, and no escrow covered more than it held
        taken = escrow_releases(ledger, acc)
        assert {c.call_id: c.used for c in lent if c.used} == taken
        held = {e.hold_id: e.held_delta for e in ledger.history(acc, limit=100_000) if e.kind == "hold"}
        used_of: dict[str, int] = defaultdict(int)
        for c in lent:
            used_of[c.escrow_id or ""] += c.used
        assert len(used_of) >= 3
        assert all(used <= held[escrow] for escrow, used in used_of.items()), (used_of, held)

        # what no call will use any more is held until the escrows expire
        assert ledger.expire_stale_holds(datetime.now(UTC) + timedelta(days=1)) >= 1
        b = ledger.balance(acc)
        assert (b.held, b.balance) == (0, 5 * CR - sum(c.used for c in calls))
        assert ledger.audit() == []
    finally:
        for replica in ledgers:
            replica.dispose()


def test_lend_now_never_waits_and_lends_only_from_memory(ledger: Ledger, make_book: MakeBook) -> None:
    acc = funded(ledger, CR)
    book = make_book(ledger)
    # no escrow yet: opening one means a database write, so lend_now declines
    assert book.lend_now(acc, 1000) is None
    first = loan_of(book, acc, 1000)
    quick = book.lend_now(acc, 1000)
    if not book.instant:  # Redis is I/O: the caller must go off the event loop
        assert quick is None
        assert book.give_back_now(first, 0) is False
        book.give_back(first, 0)
        return
    assert quick is not None and quick.escrow_hold_id == first.escrow_hold_id
    assert current(book, ledger, acc).rem == 10_000 - 2_000
    ledger.settle_escrowed(quick.id, quick.escrow_hold_id or "", acc, 400, USAGE)
    assert book.give_back_now(quick, 400) is True
    assert book.give_back_now(first, 0) is True
    assert current(book, ledger, acc).rem == 10_000 - 400
    # drained past the low watermark: the next escrow is opened in the background
    while (loan := book.lend_now(acc, 1000)) is not None and loan.escrow_hold_id == first.escrow_hold_id:
        book.give_back_now(loan, 1000)
        ledger.settle_escrowed(loan.id, loan.escrow_hold_id or "", acc, 1000, USAGE)
    book.wait_refills()
    assert ledger.audit() == []
