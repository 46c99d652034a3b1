"""Blocks leased from a shared escrow and lent from memory (``ledger.escrow_lease``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from ledger_testlib import CR, USAGE, funded

from ledger import Hold, Ledger
from ledger.escrow import EscrowBook
from ledger.escrow_lease import LOW_WATER, LeasedBook
from ledger.escrow_memory import MemoryEscrowStore
from ledger.escrow_redis import RedisEscrowStore
from ledger.escrow_store import EscrowStore

MakeLeased = Callable[..., LeasedBook]


class _SharedMemoryStore(MemoryEscrowStore):
    """The "replicas" of a test share one store in memory: one of them closing must
    not wipe what the others find in it (as a Redis store's close does not)."""

    def close(self) -> None:
        pass


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make_leased(request: pytest.FixtureRequest) -> Iterator[MakeLeased]:
    """Leased books over shared books; with Redis every shared book is on the test's keys."""
    if request.param == "memory":
        shared_store: EscrowStore = _SharedMemoryStore()  # one store: "replicas" share it

        def store() -> EscrowStore:
            return shared_store

    else:
        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")

        def store() -> EscrowStore:
            return RedisEscrowStore(url, prefix=prefix)

    made: list[LeasedBook] = []

    def make(
        ledger: Ledger, *, calls_per_block: int = 5, low_water: float = LOW_WATER, **options: int
    ) -> LeasedBook:
        sizing = {"calls_per_escrow": 40, "rich_factor": 2, **options}
        book = LeasedBook(
            EscrowBook(ledger, store(), ttl_seconds=60, **sizing),
            calls_per_block=calls_per_block,
            low_water=low_water,
        )
        made.append(book)
        return book

    yield make
    for book in made:
        book.close()


def _charge(ledger: Ledger, book: LeasedBook, loan: Hold, micro: int) -> None:
    assert loan.escrow_hold_id is not None
    ledger.settle_escrowed(loan.id, loan.escrow_hold_id, loan.account_id, micro, USAGE)
    book.give_back(loan, micro)


def test_unlent_counts_the_shared_escrow_and_this_process_block(
    ledger: Ledger, make_leased: MakeLeased
) -> None:
    acc = funded(ledger, 100 * CR)
    book = make_leased(ledger)
    assert book.unlent(acc) == 0
    loan = book.lend(acc, 1000)  # a block of 5 x 1000 from an escrow of 200,000
    assert loan is not None and loan.escrow_hold_id is not None
    assert book.unlent(acc) == 200_000 - 1000
    _charge(ledger, book, loan, 300)
    assert book.unlent(acc) == 200_000 - 300
    b = ledger.balance(acc)
    assert b.held - book.unlent(acc) == 0


def test_a_block_lends_from_memory_and_goes_back_whole(ledger: Ledger, make_leased: MakeLeased) -> None:
    acc = funded(ledger, 100 * CR)
    book = make_leased(ledger, low_water=0)  # one block at a time: none leased ahead
    first = book.lend(acc, 1000)  # leases a block of 5 x 1000 from the shared escrow
    assert first is not None and first.escrow_hold_id is not None
    escrow = ledger.get_hold(first.escrow_hold_id)
    assert escrow.amount == 40 * 5 * 1000  # the shared escrow: 40 blocks' worth
    others = [book.lend_now(acc, 1000) for _ in range(4)]
    assert all(o is not None and o.escrow_hold_id == escrow.id for o in others)
    assert book.lend_now(acc, 1000) is None  # the block is lent out
    for loan in [first, *others]:
        assert loan is not None
        _charge(ledger, book, loan, 300)
    assert len({o.id for o in others if o is not None} | {first.id}) == 5
    # a new block replaces the old one; the old one (no call left) goes back now
    nxt = book.lend(acc, 1000)
    assert nxt is not None and nxt.escrow_hold_id == escrow.id
    _charge(ledger, book, nxt, 300)
    book.close()
    balance = ledger.balance(acc)
    assert balance.balance == 100 * CR - 6 * 300
    # everything not charged went back to the shared escrow: it holds exactly that
    assert ledger.get_hold(escrow.id).amount == escrow.amount - 6 * 300
    assert balance.held == escrow.amount - 6 * 300
    assert ledger.audit() == []


def test_the_next_block_is_leased_ahead_and_lent_without_a_round_trip(
    ledger: Ledger, make_leased: MakeLeased
) -> None:
    acc = funded(ledger, 100 * CR)
    book = make_leased(ledger, calls_per_block=8)  # low water: 2 calls' worth left
    first = book.lend(acc, 1000)
    assert first is not None and first.escrow_hold_id is not None
    loans = [first] + [book.lend_now(acc, 1000) for _ in range(6)]  # 1000 left: below 2 x 1000
    book.wait_refills()  # the lease ahead, in the background
    loans += [book.lend_now(acc, 1000) for _ in range(3)]  # the last of the block, then the next
    assert all(loan is not None and loan.escrow_hold_id == first.escrow_hold_id for loan in loans)
    escrow = ledger.get_hold(first.escrow_hold_id)
    # two blocks are out of the shared escrow, and still the account's own to spend here
    assert book.unlent(acc) == escrow.amount - 10 * 1000
    for loan in loans:
        assert loan is not None
        _charge(ledger, book, loan, 300)
    book.close()
    balance = ledger.balance(acc)
    assert balance.balance == 100 * CR - 10 * 300
    assert ledger.get_hold(escrow.id).amount == escrow.amount - 10 * 300
    assert balance.held == escrow.amount - 10 * 300
    # both blocks went back whole: another process finds all the escrow's credit unlent
    assert make_leased(ledger).unlent(acc) == escrow.amount - 10 * 300
    assert ledger.audit() == []


def test_a_block_leased_ahead_and_never_lent_from_goes_back_at_close(
    ledger: Ledger, make_leased: MakeLeased
) -> None:
    acc = funded(ledger, 100 * CR)
    book = make_leased(ledger, calls_per_block=4)  # low water: 1 call's worth left
    loans = [book.lend(acc, 1000)] + [book.lend_now(acc, 1000) for _ in range(3)]
    book.wait_refills()
    assert all(loan is not None for loan in loans)
    escrow_id = loans[0].escrow_hold_id if loans[0] is not None else None
    assert escrow_id is not None
    amount = ledger.get_hold(escrow_id).amount
    other = make_leased(ledger)
    assert other.unlent(acc) == amount - 8 * 1000  # this block and the one leased ahead
    for loan in loans:
        assert loan is not None
        _charge(ledger, book, loan, 700)
    book.close()
    assert other.unlent(acc) == amount - 4 * 700
    assert ledger.balance(acc).held == amount - 4 * 700
    assert ledger.audit() == []


def test_a_lease_ahead_refused_is_not_asked_again_on_every_call(
    ledger: Ledger, make_leased: MakeLeased, monkeypatch: pytest.MonkeyPatch
) -> None:
    acc = funded(ledger, 100 * CR)
    book = make_leased(ledger, calls_per_block=8)  # low water: 2 calls' worth left
    loans = [book.lend(acc, 1000)]
    asked: list[int] = []

    def refusing(account_id: int, micro: int, *, reference: str = "") -> Hold | None:
        asked.append(micro)  # an escrow too low for another block
        return None

    monkeypatch.setattr(book.shared, "lend", refusing)
    for _ in range(7):
        loans.append(book.lend_now(acc, 1000))
        book.wait_refills()
    assert all(loan is not None for loan in loans)
    assert asked == [8 * 1000]  # once for the block, not again on each of its last calls
    monkeypatch.undo()
    for loan in loans:
        assert loan is not None
        _charge(ledger, book, loan, 500)
    book.close()
    assert ledger.balance(acc).balance == 100 * CR - 8 * 500


def test_a_call_costing_more_than_its_loan_is_taken_from_the_block(
    ledger: Ledger, make_leased: MakeLeased
) -> None:
    acc = funded(ledger, 100 * CR)
    book = make_leased(ledger)
    loan = book.lend(acc, 1000)
    assert loan is not None and loan.escrow_hold_id is not None
    _charge(ledger, book, loan, 4500)  # 3500 more than lent: the block has 4000 left
    assert book.lend_now(acc, 1000) is None  # 500 left in the block: not enough
    more = book.lend(acc, 1000)  # a new block
    assert more is not None
    _charge(ledger, book, more, 1000)
    book.close()
    escrow = ledger.get_hold(loan.escrow_hold_id)
    assert escrow.amount == 40 * 5 * 1000 - 5500
    assert ledger.balance(acc).balance == 100 * CR - 5500
    assert ledger.audit() == []


def test_an_account_too_poor_for_a_block_takes_ordinary_holds(
    ledger: Ledger, make_leased: MakeLeased
) -> None:
    acc = funded(ledger, 10 * CR)
    # a block of 1000 x 1000 µcr needs an escrow of 40 blocks, rich at 2x: 80 credits
    book = make_leased(ledger, calls_per_block=1000)
    assert book.lend(acc, 1000) is None
    assert book.lend_now(acc, 1000) is None
    assert ledger.balance(acc).held == 0  # nothing taken: the caller places its own hold
    hold = ledger.hold(acc, 1000, ttl_seconds=60)
    ledger.settle(hold.id, 700, USAGE)
    assert ledger.balance(acc).balance == 10 * CR - 700


def test_two_replicas_with_blocks_never_lend_more_than_the_escrows_hold(
    ledger: Ledger, make_leased: MakeLeased
) -> None:
    acc = funded(ledger, 1000 * CR)
    books = [make_leased(ledger), make_leased(ledger)]
    charged: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        book = books[n % 2]
        for i in range(25):
            loan = book.lend_now(acc, 1000) or book.lend(acc, 1000)
            if loan is None:
                loan = ledger.hold(acc, 1000, ttl_seconds=60)
                ledger.settle(loan.id, 600 + i, USAGE)
            else:
                _charge(ledger, book, loan, 600 + i)
            with lock:
                charged.append(600 + i)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for book in books:
        book.close()
        book.wait_refills()
    balance = ledger.balance(acc)
    assert balance.balance == 1000 * CR - sum(charged)
    history = ledger.history(acc, limit=2000)
    assert any(e.kind == "hold" and e.reference == "escrow" for e in history)  # the calls did borrow
    # no block lent credit its escrow did not hold: every lent call's charge was taken
    # from its escrow in full (an over-lent one would have found the escrow short)
    taken = {e.reason.removeprefix("lent to call "): -e.held_delta for e in history if e.kind == "release"}
    lent = [u for u in ledger.usage(acc, limit=2000) if u.hold_id in taken]
    assert lent and all(taken[u.hold_id] == u.charged for u in lent)
    assert ledger.audit() == []
