"""The settle journal: charges on local disk first, applied in batches, each exactly once."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ledger_testlib import CR, USAGE, fake_fsyncs, funded
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from ledger import Ledger, UsageRecord, journal_dirs
from ledger import journal as journal_module
from ledger.journal import SettleJournal, apply_charges
from ledger.outbox import Outbox, PendingCharge
from pricing.errors import InvalidOperation


@pytest.fixture
def journal(ledger: Ledger, tmp_path: Path) -> Iterator[SettleJournal]:
    book = SettleJournal(ledger, tmp_path / "journal")
    yield book
    book.close()


def _charge(ledger: Ledger, account: int, micro: int, *, hold: int = CR) -> PendingCharge:
    placed = ledger.hold(account, hold, ttl_seconds=60)
    return PendingCharge(placed.id, micro, USAGE, account_id=account)


def test_a_recorded_charge_lands_once_and_its_segment_goes(ledger: Ledger, journal: SettleJournal) -> None:
    account = funded(ledger, 10 * CR)
    charge = _charge(ledger, account, 300_000)
    journal.record(charge)
    assert journal.flush(10)
    balance = ledger.balance(account)
    assert (balance.balance, balance.held) == (10 * CR - 300_000, 0)
    assert [u.charged for u in ledger.usage(account)] == [300_000]
    # recorded twice (a crash between the commit and the segment's deletion): still once
    journal.record(charge)
    assert journal.flush(10)
    assert ledger.balance(account).balance == 10 * CR - 300_000
    assert len(ledger.usage(account)) == 1
    journal.close()
    assert journal.segments() == []
    assert journal.stats.applied == 2 and journal.stats.dropped == 0


def test_many_threads_on_one_hot_account_share_fsyncs_and_batches(
    ledger: Ledger, journal: SettleJournal
) -> None:
    account = funded(ledger, 1000 * CR)
    threads, per_thread = 8, 40

    def worker() -> None:
        for _ in range(per_thread):
            journal.record(_charge(ledger, account, 1_000, hold=5_000))

    running = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    assert journal.flush(30)
    total = threads * per_thread
    balance = ledger.balance(account)
    assert balance.balance == 1000 * CR - total * 1_000
    assert balance.held == 0
    assert len(ledger.usage(account, limit=total + 10)) == total
    assert journal.stats.recorded == total
    # concurrent records share fsyncs and the writer shares transactions
    assert journal.stats.fsyncs < total
    assert journal.stats.batches < total


def test_it_tells_a_caller_whether_its_fsyncs_are_quick_enough_to_wait_for(
    ledger: Ledger, tmp_path: Path
) -> None:
    account = funded(ledger, 10 * CR)
    patient = SettleJournal(ledger, tmp_path / "patient", fast_sync_seconds=1.0)
    never = SettleJournal(ledger, tmp_path / "never", fast_sync_seconds=0.0)
    try:
        # a new journal times a few fsyncs of its file when it opens it: a local disk's
        # are far under a second from the start; 0 means never
        assert patient.syncs_fast() and not never.syncs_fast()
        for _ in range(30):
            patient.record(_charge(ledger, account, 1_000, hold=2_000))
            never.record(_charge(ledger, account, 1_000, hold=2_000))
        assert patient.stats.fsyncs == 30  # the charges' own, not the ones timed at open
        assert patient.syncs_fast()
        assert not never.syncs_fast()
        assert patient.flush(10) and never.flush(10)
        assert ledger.balance(account).balance == 10 * CR - 60 * 1_000
    finally:
        patient.close()
        never.close()


def test_only_the_event_loops_fsyncs_keep_the_interpreter_lock(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = funded(ledger, 10 * CR)
    calls: list[str] = []
    real = os.fdatasync

    def keeping_lock(fd: int) -> None:
        calls.append("lock kept")
        real(fd)

    def letting_go(fd: int) -> None:
        calls.append("lock let go")
        real(fd)

    monkeypatch.setattr(journal_module, "fdatasync_keeping_lock", keeping_lock)
    monkeypatch.setattr(os, "fdatasync", letting_go)
    book = SettleJournal(ledger, tmp_path / "journal")
    try:
        # at open: the new file's first fsync (its creation written back), then the three
        # timed ones, before any caller could write a line
        assert calls == ["lock let go"] + ["lock kept"] * 3
        calls.clear()
        on_loop = book.write(_charge(ledger, account, 1_000, hold=2_000))
        book.sync_on_loop(on_loop)  # an event loop waiting for it itself
        handed_off = book.write(_charge(ledger, account, 1_000, hold=2_000))
        book.sync_to(handed_off)  # a pool thread, for a loop that went on
        # a thread of many recording at once: they write their lines during its fsync
        book.record(_charge(ledger, account, 1_000, hold=2_000))
        assert calls == ["lock kept", "lock let go", "lock let go"]
        assert book.on_disk(on_loop) and book.on_disk(handed_off)
        assert book.stats.fsyncs == 3 and book.stats.fsyncs_handed_off == 1
    finally:
        book.close()


class _TimedDisk:
    """Real fsyncs whose duration, as the journal's ``perf_counter`` sees it, is
    ``takes``: a 2 ms threshold judged on the real clock turned on a CI host's
    scheduling rather than on the rule under test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.takes = 0.0001
        self._now = 0.0
        self._real = fake_fsyncs(monkeypatch, self.fdatasync)
        clock = SimpleNamespace(
            **{name: getattr(time, name) for name in dir(time) if not name.startswith("_")}
        )
        clock.perf_counter = lambda: self._now
        monkeypatch.setattr(journal_module, "time", clock)

    def fdatasync(self, fd: int) -> None:
        self._real(fd)
        self._now += self.takes


def test_only_fsyncs_waited_for_on_the_callers_thread_say_the_disk_is_slow(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = funded(ledger, 10 * CR)
    disk = _TimedDisk(monkeypatch)
    book = SettleJournal(ledger, tmp_path / "journal", fast_sync_seconds=0.002)
    try:
        assert book.syncs_fast()
        # what a busy event loop's pool thread measured: the fsync, then the wait for the
        # interpreter lock (or a network disk)
        disk.takes = 0.01
        for _ in range(12):
            charge = _charge(ledger, account, 1_000, hold=2_000)
            line = book.write(charge)
            book.sync_to(line)  # what LoopRecorder runs on its pool
            book.accept(line, charge)
        assert book.syncs_fast()  # handed to another thread: not timed
        for _ in range(12):
            book.record(_charge(ledger, account, 1_000, hold=2_000))
        assert not book.syncs_fast()  # waited for here: the disk is slow now
        disk.takes = 0.0001
        monkeypatch.setattr(journal_module, "PROBE_SECONDS", 3600.0)
        # slow of late: once in a while one caller waits on its own thread, to see
        # whether the disk got quick again
        book._probe_at = 0.0
        assert book.syncs_fast() and not book.syncs_fast()
        monkeypatch.setattr(journal_module, "PROBE_SECONDS", 0.0)
        book._probe_at = 0.0
        probes = 0
        while book._disk_sync >= 0.002:
            assert book.syncs_fast()  # a probe each time, PROBE_SECONDS being 0
            book.record(_charge(ledger, account, 1_000, hold=2_000))
            probes += 1
            assert probes <= 3
        assert probes == 3  # the third quickest of the last nine: three quick ones turn it
        assert book.syncs_fast()
        assert book.flush(10)
        assert ledger.balance(account).balance == 10 * CR - (24 + probes) * 1_000
    finally:
        book.close()


def test_waits_behind_other_threads_now_and_then_do_not_make_a_quick_disk_look_slow(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event loop's own fsync is timed until it has the interpreter lock back: behind
    a thread running Python meanwhile (the writer building a batch), a 0.1 ms disk
    reads up to the switch interval, several times running."""
    account = funded(ledger, 10 * CR)
    disk = _TimedDisk(monkeypatch)
    book = SettleJournal(ledger, tmp_path / "journal", fast_sync_seconds=0.002)
    try:
        for n in range(60):
            disk.takes = 0.005 if n % 10 < 6 else 0.0001  # six in ten behind the lock
            book.record(_charge(ledger, account, 1_000, hold=2_000))
            assert book.syncs_fast(), n
        disk.takes = 0.005
        for _ in range(7):  # the disk itself got slow: seven in a row tell
            book.record(_charge(ledger, account, 1_000, hold=2_000))
        assert not book.syncs_fast() and not book.syncs_fast()
        assert book.flush(10)
    finally:
        book.close()


def test_segments_left_by_a_crashed_process_are_applied_once_at_start(ledger: Ledger, tmp_path: Path) -> None:
    account = funded(ledger, 10 * CR)
    left_behind = tmp_path / "journal"
    left_behind.mkdir()
    charges = [_charge(ledger, account, 100_000) for _ in range(3)]
    lost_hold = PendingCharge(uuid.uuid4().hex, 50_000, USAGE, account_id=account)
    lines = "".join(c.to_json() + "\n" for c in [*charges, lost_hold])
    # the same charges twice, in two segments, and a torn last line
    (left_behind / "journal-20261121T000000-1-000000.jsonl").write_text(lines)
    (left_behind / "journal-20261121T000000-1-000001.jsonl").write_text(lines + '{"hold_id": "to')
    assert SettleJournal.recover(ledger, left_behind) == 8
    assert list(left_behind.glob("journal-*.jsonl")) == []
    balance = ledger.balance(account)
    # three held calls and one whose hold was never written (an async hold lost in a crash)
    assert (balance.balance, balance.held) == (10 * CR - 350_000, 0)
    assert len(ledger.usage(account)) == 4


def test_a_crashed_segment_with_its_reserved_tail_is_read_past_the_nul_bytes(
    ledger: Ledger, tmp_path: Path
) -> None:
    account = funded(ledger, 10 * CR)
    left_behind = tmp_path / "journal"
    left_behind.mkdir()
    first, unwritten, last = (_charge(ledger, account, 100_000) for _ in range(3))
    hole = "\0" * len(unwritten.to_json() + "\n")
    # space reserved ahead of the lines is NUL bytes; so is a line the crash kept off the
    # disk while a later one got there (neither fsync had returned)
    (left_behind / "journal-20261121T000000-1-000000.jsonl").write_text(
        first.to_json() + "\n" + hole + last.to_json() + "\n" + "\0" * 4096
    )
    assert SettleJournal.recover(ledger, left_behind) == 2
    assert ledger.balance(account).balance == 10 * CR - 200_000
    assert sorted(u.hold_id for u in ledger.usage(account)) == sorted([first.hold_id, last.hold_id])


def test_lines_are_written_into_space_reserved_ahead_of_them(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "PREALLOCATE_BYTES", 1024)
    account = funded(ledger, 10 * CR)
    journal = SettleJournal(ledger, tmp_path / "journal")
    charges = [_charge(ledger, account, 10_000) for _ in range(10)]
    written = sum(len(c.to_json()) + 1 for c in charges)
    assert written > 2 * 1024  # the reservation is extended as the lines come
    try:
        for charge in charges:
            journal.record(charge)
        (segment,) = journal.segments()
        size = segment.stat().st_size
        assert size % 1024 == 0 and written <= size < written + 1024
        assert [c.hold_id for c in Outbox(segment).pending()] == [c.hold_id for c in charges]
        assert journal.flush(10)
    finally:
        journal.close()
    assert journal.segments() == []
    assert ledger.balance(account).balance == 10 * CR - 100_000
    assert len(ledger.usage(account)) == 10


def test_a_segment_rotates_and_is_deleted_once_applied(ledger: Ledger, tmp_path: Path) -> None:
    account = funded(ledger, 10 * CR)
    journal = SettleJournal(ledger, tmp_path / "journal", segment_lines=3)
    try:
        for _ in range(7):
            journal.record(_charge(ledger, account, 10_000))
        assert journal.flush(10)
        # the two full segments are gone; only the current one is left
        assert len(journal.segments()) == 1
    finally:
        journal.close()
    assert journal.segments() == []
    assert ledger.balance(account).balance == 10 * CR - 70_000


def test_a_segment_whose_charges_the_database_lost_is_applied_again_before_it_goes(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = funded(ledger, 10 * CR)
    real = journal_module.apply_charges
    lost: list[str] = []

    def lose_the_first_batch(book: Ledger, charges: list[PendingCharge], *rest: Any) -> int:
        # as if its async commit had been lost in a database crash
        if not lost:
            lost.extend(c.hold_id for c in charges)
            return 0
        return real(book, charges, *rest)

    monkeypatch.setattr(journal_module, "apply_charges", lose_the_first_batch)
    journal = SettleJournal(ledger, tmp_path / "journal", segment_lines=3)
    try:
        for _ in range(3):
            journal.record(_charge(ledger, account, 10_000))
        assert journal.flush(10)
    finally:
        journal.close()
    assert lost  # a batch was lost, and found missing when its segment was checked
    assert journal.segments() == []
    assert ledger.balance(account).balance == 10 * CR - 30_000
    assert len(ledger.usage(account)) == 3
    assert ledger.audit() == []


def test_a_whole_segment_is_applied_again_in_batches(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    account = funded(ledger, 10 * CR)
    charges = [_charge(ledger, account, 1_000) for _ in range(10)]
    sizes: list[int] = []
    real = journal_module._apply_batch

    def spy(book: Ledger, batch: list[PendingCharge], *rest: Any) -> list[PendingCharge]:
        sizes.append(len(batch))
        return real(book, batch, *rest)

    # a segment re-applied after a database crash holds up to 50,000 charges: one
    # statement for all of them would pass SQLite's limit of 32,766 parameters
    monkeypatch.setattr(journal_module, "MAX_BATCH", 4)
    monkeypatch.setattr(journal_module, "_apply_batch", spy)
    assert apply_charges(ledger, charges) == 0
    assert sizes == [4, 4, 2]
    assert len(ledger.usage(account)) == 10
    assert ledger.balance(account).balance == 10 * CR - 10_000
    assert ledger.audit() == []


def test_unsettled_names_the_holds_without_a_usage_event(ledger: Ledger) -> None:
    account = funded(ledger, 10 * CR)
    charged, open_hold = (ledger.hold(account, CR, ttl_seconds=60) for _ in range(2))
    ledger.settle(charged.id, 1_000, USAGE)
    never = uuid.uuid4().hex
    assert ledger.unsettled([charged.id, open_hold.id, never]) == {open_hold.id, never}
    assert ledger.unsettled([]) == set()


def test_hold_ids_are_read_from_every_line_without_building_charges(tmp_path: Path) -> None:
    plain = PendingCharge(uuid.uuid4().hex, 1, USAGE, account_id=1)
    quoted = PendingCharge('made "up" id', 2, USAGE, account_id=1)  # not a plain id: parsed
    # as lines were written before orjson (json.dumps: a space after each colon)
    older = json.dumps({**json.loads(plain.to_json()), "hold_id": uuid.uuid4().hex, "micro": 3})
    path = tmp_path / "journal-x.jsonl"
    path.write_text(
        plain.to_json() + "\n" + older + "\n" + quoted.to_json() + "\n" + '{"hold_id": "to' + "\0" * 512
    )
    assert Outbox(path).hold_ids() == [plain.hold_id, json.loads(older)["hold_id"], quoted.hold_id]
    assert [c.micro for c in Outbox(path).pending()] == [1, 3, 2]
    assert Outbox(tmp_path / "absent.jsonl").hold_ids() == []


def test_a_line_is_written_whatever_its_usage_holds(tmp_path: Path) -> None:
    odd = replace(USAGE, user_id="caf\u00e9 \U0001f600", end_user_id="a\x00b\ud800", tokens_in=2**70)
    charge = PendingCharge(uuid.uuid4().hex, 5, odd, account_id=1)
    line = charge.to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    # a NUL or a lone surrogate no database stores is replaced when the usage is built;
    # a count too large for orjson goes through the standard library
    assert PendingCharge.from_json(line.decode()) == charge
    assert charge.usage.end_user_id == "a\ufffdb\ufffd" and charge.usage.user_id == "caf\u00e9 \U0001f600"
    box = Outbox(tmp_path / "outbox.jsonl")
    box.append(charge)
    assert box.pending() == [charge] and box.hold_ids() == [charge.hold_id]


def test_a_charge_whose_usage_text_no_database_stores_lands_with_its_batch(
    ledger: Ledger, journal: SettleJournal
) -> None:
    account = funded(ledger, 10 * CR)
    odd = UsageRecord(
        model="m\x00", end_user_id="a\x00b", user_id="\ud800", provider_cost_usd=USAGE.provider_cost_usd
    )
    charges = [
        _charge(ledger, account, 10_000),
        _charge(ledger, account, 20_000),
        _charge(ledger, account, 30_000),
    ]
    charges[1] = replace(charges[1], usage=odd)
    direct = ledger.hold(account, CR, ttl_seconds=60)
    ledger.settle(direct.id, 5_000, odd)
    for charge in charges:
        journal.record(charge)
    assert journal.flush(30)
    assert journal.stats.applied == 3 and journal.stats.dropped == 0
    assert ledger.balance(account).balance == 10 * CR - 65_000
    events = {e.hold_id: e for e in ledger.usage(account)}
    for hold_id in (charges[1].hold_id, direct.id):
        assert (events[hold_id].end_user_id, events[hold_id].user_id, events[hold_id].model) == (
            "a\ufffdb",
            "\ufffd",
            "m\ufffd",
        )


@pytest.mark.parametrize("external_id", ["a\x00b", "a\udc80b"])
def test_an_external_id_no_database_stores_is_refused_by_name(ledger: Ledger, external_id: str) -> None:
    with pytest.raises(InvalidOperation, match="external_id"):
        ledger.open_account("end_user", external_id, tier="free")
    with pytest.raises(InvalidOperation, match="external_id"):
        ledger.find_account("end_user", external_id)
    assert ledger.audit() == []


def test_a_bad_charge_is_dropped_without_sinking_its_batch(ledger: Ledger) -> None:
    account = funded(ledger, 10 * CR)
    good = [_charge(ledger, account, 10_000) for _ in range(3)]
    orphan = PendingCharge(uuid.uuid4().hex, 10_000, USAGE)  # no hold, no account: nobody to charge
    dropped = apply_charges(ledger, [good[0], orphan, *good[1:]])
    assert dropped == 1
    assert ledger.balance(account).balance == 10 * CR - 30_000


@pytest.mark.postgres
def test_charges_wait_through_a_database_outage(pg_url: str, pg_admin: Engine, tmp_path: Path) -> None:
    ledger = Ledger(pg_url, pool_size=2, max_overflow=0)
    ledger.create_schema()
    name = make_url(pg_url).database
    journal = SettleJournal(ledger, tmp_path / "journal")
    try:
        account = funded(ledger, 10 * CR)
        charges = [_charge(ledger, account, 20_000) for _ in range(5)]
        # The outage: the database disappears under its name (a superuser ignores
        # CONNECTION LIMIT 0), so every connection, pooled or new, fails.
        with pg_admin.connect() as admin:
            admin.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
            admin.execute(text(f'ALTER DATABASE "{name}" RENAME TO "{name}_away"'))
        for charge in charges:
            journal.record(charge)  # on disk although the database is away
        assert not journal.flush(0.5)
        assert journal.stats.retries >= 1
        with pg_admin.connect() as admin:
            admin.execute(text(f'ALTER DATABASE "{name}_away" RENAME TO "{name}"'))
        assert journal.flush(20)
        balance = ledger.balance(account)
        assert (balance.balance, balance.held) == (10 * CR - 100_000, 0)
        assert ledger.audit() == []
    finally:
        journal.close()
        ledger.dispose()
        with pg_admin.connect() as admin:  # a failed run must not leave the renamed database
            admin.execute(text(f'DROP DATABASE IF EXISTS "{name}_away" WITH (FORCE)'))


@pytest.mark.postgres
def test_async_holds_commit_without_waiting_for_the_flush(pg_url: str) -> None:
    ledger = Ledger(pg_url, async_holds=True, pool_size=2, max_overflow=0)
    ledger.create_schema()
    try:
        account = funded(ledger, 10 * CR)
        placed = ledger.hold(account, CR, ttl_seconds=60)
        settled = ledger.settle(placed.id, 400_000, USAGE)
        assert settled.charged == 400_000
        assert ledger.balance(account).balance == 10 * CR - 400_000
        hold_engine = ledger._hold_engine
        assert hold_engine is not None
        with hold_engine.connect() as conn:
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "off"
        with ledger.core_transaction() as conn:
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
        assert ledger.audit() == []
    finally:
        ledger.dispose()


def test_async_holds_are_ignored_on_sqlite(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url, async_holds=True)
    try:
        assert ledger._hold_engine is None
    finally:
        ledger.dispose()
    assert create_engine(sqlite_url).dialect.name == "sqlite"


def test_a_live_journal_is_left_alone_and_a_dead_ones_is_applied(ledger: Ledger, tmp_path: Path) -> None:
    account = funded(ledger, 10 * CR)
    base = tmp_path / "journal"
    live = SettleJournal(ledger, base, linger_seconds=30)  # its writer waits: lines stay unapplied
    try:
        live.record(_charge(ledger, account, 10_000))
        # a process that died with a charge recorded: its directory is no longer locked
        dead = _dead_directory(base, "proc-4242-deadbeef", journal_module.database_key(ledger))
        (dead / "journal-20261121T000000-4242-000000.jsonl").write_text(
            _charge(ledger, account, 20_000).to_json() + "\n"
        )
        second = SettleJournal(ledger, base)  # another worker starting on the same base
        try:
            assert second.recovered == 1  # the dead one's charge, not the live one's
            assert not dead.exists()
            assert live.segments() != []  # untouched
            assert second.directory != live.directory
        finally:
            second.close()
    finally:
        live.close()  # applies its charge now
    assert ledger.balance(account).balance == 10 * CR - 30_000
    assert list(base.iterdir()) == []


def _dead_directory(base: Path, name: str, database: str | None) -> Path:
    """A journal directory as a process that died left it (unlocked), naming ``database``."""
    dead = base / name
    dead.mkdir(parents=True)
    (dead / journal_dirs.LOCK_NAME).touch()
    if database is not None:
        (dead / journal_dirs.DATABASE_NAME).write_text(database + "\n")
    return dead


def test_a_dead_journal_of_another_database_is_left_alone(ledger: Ledger, tmp_path: Path) -> None:
    """Proxies on two databases may share a base; ids in one database are other accounts in the other."""
    account = funded(ledger, 10 * CR)
    base = tmp_path / "journal"
    line = _charge(ledger, account, 20_000).to_json() + "\n"
    mine = _dead_directory(base, "proc-1-aaaaaaaa", journal_module.database_key(ledger))
    theirs = _dead_directory(base, "proc-2-bbbbbbbb", "another-database")
    unnamed = _dead_directory(base, "proc-3-cccccccc", None)
    for directory in (mine, theirs, unnamed):
        (directory / "journal-20261121T000000-1-000000.jsonl").write_text(line)
    journal = SettleJournal(ledger, base)
    try:
        assert journal.recovered == 1  # its own database's dead directory only
        assert not mine.exists()
        for kept in (theirs, unnamed):
            assert [p.name for p in kept.glob("journal-*.jsonl")] == [
                "journal-20261121T000000-1-000000.jsonl"
            ]
        assert journal_dirs.database_of(journal.directory) == journal_module.database_key(ledger)
    finally:
        journal.close()
    assert ledger.balance(account).balance == 10 * CR - 20_000
