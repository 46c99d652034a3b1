"""Ledger throughput (hold + settle cycles/s) beside the raw database rate, statement counts, profile.

Everything runs in the bench process itself (threads, like the proxy's ledger
thread pool): no proxy is running while these are measured.
"""

from __future__ import annotations

import contextlib
import cProfile
import ctypes
import os
import pstats
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event

from ledger import Ledger, UsageRecord

from . import machine
from .pg import libpq_url
from .stats import percentile, r

_LIBC = ctypes.CDLL(None)
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"  # for the redis fast path
HOLD_MICRO = 50_000  # 0.05 credit: about the worst case of the proxy benchmark's request
CHARGE_MICRO = 20_000
PLENTY = 10**15
USAGE = UsageRecord(
    model="bench-gpt-4o",
    provider="openai",
    call_type="completion",
    api_key_hash="0" * 64,
    user_id="bench",
    tokens_in=10,
    tokens_out=5,
    provider_cost_usd=Decimal("0.000075"),
    markup_rule=None,
    catalog_version="bench",
)


# -- setup -------------------------------------------------------------------------


def open_books(url: str, accounts: int) -> tuple[Ledger, list[int]]:
    """A ledger with ``accounts`` funded accounts; the first one is the hot account."""
    ledger = Ledger(url, pool_size=10, max_overflow=5)
    ledger.create_schema()
    ids = []
    for i in range(accounts):
        account = ledger.open_account("user", f"bench-{i}", tier="free")
        ledger.grant(account.id, PLENTY, source="bench", external_ref=f"bench-{i}")
        ids.append(account.id)
    return ledger, ids


def group_commit_ledger(url: str) -> Ledger | None:
    """A second ledger on the same books with group commit on; None when the measured
    commit predates ``Ledger(group_commit=...)`` (``--commit`` of an older revision)."""
    try:
        return Ledger(url, pool_size=10, max_overflow=5, group_commit=True)  # type: ignore[call-arg,unused-ignore]
    except TypeError:
        return None


class FastPath:
    """A hot-path configuration measured beside the plain ledger on the same books.

    ``journal``: holds with async commits, charges fsync'd to the settle journal and
    applied in batches by its writer. ``escrow``: the same, with each call's credit
    lent from an escrow hold kept in the process (``ledger.escrow``) instead of a hold
    each; ``redis``: the escrow lent through Redis, as replicas share it.
    A round's time includes waiting for the journal to apply everything recorded in
    it, so the figure is what the ledger sustains, not what the disk accepts.
    """

    def __init__(self, name: str, url: str, workdir: Path, redis_url: str | None) -> None:
        from ledger.journal import SettleJournal

        self.name = name
        self.ledger = Ledger(url, pool_size=9, max_overflow=0, async_holds=True)  # type: ignore[call-arg,unused-ignore]
        self.journal = SettleJournal(self.ledger, workdir / f"journal-{name}-{os.getpid()}-{id(self)}")
        self.escrow: Any = None
        self.redis_url, self.prefix = redis_url, ""
        if name == "escrow":
            from ledger.escrow import EscrowBook

            self.escrow = EscrowBook.in_memory(self.ledger, ttl_seconds=900)
        elif name == "redis":
            from ledger.escrow import EscrowBook

            self.prefix = f"credits-bench-{os.getpid()}-{random.randrange(1 << 30)}"
            from ledger.escrow_lease import LeasedBook

            shared = EscrowBook.on_redis(self.ledger, str(redis_url), ttl_seconds=900, prefix=self.prefix)
            self.escrow = LeasedBook(shared)  # as the proxy uses it: blocks lent from memory

    def cycle(self, account_id: int) -> Callable[[], None]:
        from ledger.outbox import PendingCharge

        ledger, journal, escrow = self.ledger, self.journal, self.escrow
        # as the credit gate calls a book: from memory when it can (``lend_now``,
        # ``give_back_now``: a block handed back in the background), else the slow way;
        # a measured commit older than those methods lends and gives back the slow way
        lend_now = getattr(escrow, "lend_now", lambda *_a, **_k: None)
        give_back_now = getattr(escrow, "give_back_now", lambda *_a: False)

        def cycle() -> None:
            hold = None
            if escrow is not None:
                hold = lend_now(account_id, HOLD_MICRO, reference="bench-gpt-4o") or escrow.lend(
                    account_id, HOLD_MICRO, reference="bench-gpt-4o"
                )
            if hold is None:
                hold = ledger.hold(account_id, HOLD_MICRO, ttl_seconds=900, reference="bench-gpt-4o")
            journal.record(
                PendingCharge(
                    hold.id, CHARGE_MICRO, USAGE, account_id=account_id, escrow_hold_id=hold.escrow_hold_id
                )
            )
            if hold.escrow_hold_id is not None and not give_back_now(hold, CHARGE_MICRO):
                escrow.give_back(hold, CHARGE_MICRO)

        return cycle

    def run(self, account_id: int, threads: int, seconds: float, max_ops: int) -> dict[str, Any]:
        result = run_threads(lambda _n: self.cycle(account_id), threads, seconds, max_ops)
        started = time.perf_counter()
        if not self.journal.flush(120):
            result["errors"] += 1
            result["first_error"] = result["first_error"] or "journal not applied within 120 s"
        result["elapsed_s"] += time.perf_counter() - started
        return result

    def counts(self) -> dict[str, Any]:
        stats = self.journal.stats
        return {
            "charges_per_batch": r(stats.applied / stats.batches if stats.batches else 0.0, 2),
            "charges_per_fsync": r(stats.recorded / stats.fsyncs if stats.fsyncs else 0.0, 2),
        }

    def close(self) -> None:
        self.journal.close()
        if self.escrow is not None:
            self.escrow.close()
        self.ledger.dispose()
        if self.prefix and self.redis_url:
            import redis

            client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
            try:
                keys = list(client.scan_iter(match=f"{self.prefix}:*"))
                if keys:
                    client.delete(*keys)
            finally:
                client.close()


def fast_paths(url: str, workdir: Path, redis_url: str | None, log: Callable[[str], None]) -> list[FastPath]:
    """The fast paths this commit has (none before the journal existed)."""
    paths: list[FastPath] = []
    try:
        paths.append(FastPath("journal", url, workdir, None))
    except (ImportError, TypeError) as error:
        log(f"  (no settle journal in the measured code: {error})")
        return paths
    try:
        paths.append(FastPath("escrow", url, workdir, None))
    except (ImportError, AttributeError) as error:
        log(f"  (no in-process escrow in the measured code: {error})")
    if redis_url is None:
        return paths
    try:
        import redis

        redis.Redis.from_url(redis_url, socket_timeout=1).ping()
        paths.append(FastPath("redis", url, workdir, redis_url))
    except (ImportError, AttributeError) as error:
        log(f"  (no Redis escrow in the measured code: {error})")
    except Exception as error:
        log(f"  (Redis at {redis_url} unreachable, its figures skipped: {error})")
    return paths


def _batch_counts(ledger: Ledger | None) -> tuple[int, int]:
    committer = getattr(ledger, "group_commit", None)
    if committer is None:
        return (0, 0)
    return (committer.batches, committer.operations)


# -- a bounded, threaded loop ------------------------------------------------------------


def run_threads(
    make_worker: Callable[[int], Callable[[], None]],
    threads: int,
    duration: float,
    max_ops: int,
) -> dict[str, Any]:
    """Run ``threads`` workers calling their op until ``duration`` s or ``max_ops`` ops in all."""
    lat: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    count = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def body(n: int) -> None:
        op = make_worker(n)
        mine = lat[n]
        barrier.wait()
        deadline = stop_at[0]
        while True:
            with lock:
                if count[0] >= max_ops:
                    return
                count[0] += 1
            t0 = time.perf_counter()
            if t0 >= deadline:
                return
            try:
                op()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                if len(errors) > 50:
                    return
                continue
            mine.append((time.perf_counter() - t0) * 1000.0)

    workers = [threading.Thread(target=body, args=(n,), daemon=True) for n in range(threads)]
    for w in workers:
        w.start()
    start = time.perf_counter()
    stop_at[0] = start + duration
    barrier.wait()
    for w in workers:
        w.join(timeout=duration + 60)
    elapsed = time.perf_counter() - start
    flat = [x for per in lat for x in per]
    return {
        "ops": len(flat),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "elapsed_s": elapsed,
        "latencies_ms": flat,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ops = sum(x["ops"] for x in runs)
    elapsed = sum(x["elapsed_s"] for x in runs)
    lat = [v for x in runs for v in x["latencies_ms"]]
    return {
        "per_s": r(ops / elapsed if elapsed else 0.0, 1),
        "ops": ops,
        "errors": sum(x["errors"] for x in runs),
        "first_error": next((x["first_error"] for x in runs if x["first_error"]), ""),
        "p50_ms": r(percentile(lat, 50), 3),
        "p99_ms": r(percentile(lat, 99), 3),
        "rounds_per_s": [r(x["ops"] / x["elapsed_s"], 1) for x in runs if x["elapsed_s"]],
    }


# -- the operations ------------------------------------------------------------------------


def ledger_cycle(ledger: Ledger, ids: list[int], hot: bool, seed: int) -> Callable[[], None]:
    rnd = random.Random(seed)

    def cycle() -> None:
        account_id = ids[0] if hot else rnd.choice(ids)
        hold = ledger.hold(account_id, HOLD_MICRO, ttl_seconds=900, reference="bench-gpt-4o")
        ledger.settle(hold.id, CHARGE_MICRO, USAGE)

    return cycle


RAW_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts_raw (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS entries_raw (
    id BIGSERIAL PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts_raw(id),
    amount BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""


def raw_pg_setup(url: str, accounts: int) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(RAW_PG_SCHEMA)
        conn.execute(
            "INSERT INTO accounts_raw (id, balance) SELECT g, %s FROM generate_series(1, %s) g "
            "ON CONFLICT (id) DO NOTHING",
            (PLENTY, accounts),
        )


@contextlib.contextmanager
def raw_pg_workers(
    url: str, threads: int, accounts: int, hot: bool
) -> Iterator[Callable[[int], Callable[[], None]]]:
    """One psycopg connection per thread; one op = UPDATE + INSERT in one transaction."""
    conns = [psycopg.connect(libpq_url(url)) for _ in range(threads)]
    try:

        def make(n: int) -> Callable[[], None]:
            conn = conns[n]
            rnd = random.Random(n)

            def tx() -> None:
                account_id = 1 if hot else rnd.randint(1, accounts)
                conn.execute("UPDATE accounts_raw SET balance = balance - 1 WHERE id = %s", (account_id,))
                conn.execute("INSERT INTO entries_raw (account_id, amount) VALUES (%s, -1)", (account_id,))
                conn.commit()

            return tx

        yield make
    finally:
        for conn in conns:
            conn.close()


@contextlib.contextmanager
def raw_sqlite_workers(path: Path, threads: int) -> Iterator[Callable[[int], Callable[[], None]]]:
    """The same transaction on SQLite, with the ledger's settings (WAL, synchronous=NORMAL, BEGIN IMMEDIATE)."""
    setup = sqlite3.connect(path, isolation_level=None)
    setup.executescript(
        "PRAGMA journal_mode=WAL;"
        "CREATE TABLE IF NOT EXISTS accounts_raw (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS entries_raw (id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL,"
        " amount INTEGER NOT NULL, created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);"
        f"INSERT OR IGNORE INTO accounts_raw (id, balance) VALUES (1, {PLENTY});"
    )
    setup.close()
    conns = []
    for _ in range(threads):
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA synchronous=NORMAL")
        conns.append(conn)
    try:

        def make(n: int) -> Callable[[], None]:
            conn = conns[n]

            def tx() -> None:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE accounts_raw SET balance = balance - 1 WHERE id = 1")
                conn.execute("INSERT INTO entries_raw (account_id, amount) VALUES (1, -1)")
                conn.execute("COMMIT")

            return tx

        yield make
    finally:
        for conn in conns:
            conn.close()


# -- the throughput matrix -----------------------------------------------------------------


def throughput(
    backends: dict[str, str],
    thread_counts: list[int],
    accounts: int,
    cell_seconds: float,
    rounds: int,
    max_ops: int,
    workdir: Path,
    log: Callable[[str], None],
    redis_url: str | None = None,
) -> dict[str, Any]:
    """Ledger hold+settle cycles/s (hot and spread) and the raw UPDATE+INSERT rate, same threads.

    For the hot account the ledger and the raw transaction are measured in
    alternating rounds (raw, ledger, raw, ledger, ...) so drift hits both alike.
    """
    out: dict[str, Any] = {}
    for backend, url in backends.items():
        ledger, ids = open_books(url, accounts)
        grouped = group_commit_ledger(url)
        fast = fast_paths(url, workdir, redis_url, log)
        if backend == "postgresql":
            raw_pg_setup(url, accounts)
        raw_path = workdir / "raw.sqlite"
        res: dict[str, Any] = {}
        try:
            for threads in thread_counts:
                per_round = cell_seconds / rounds
                hot_runs: list[dict[str, Any]] = []
                raw_runs: list[dict[str, Any]] = []
                group_runs: list[dict[str, Any]] = []
                fast_runs: dict[str, list[dict[str, Any]]] = {path.name: [] for path in fast}
                fsyncs: list[dict[str, float]] = []
                batches_before = _batch_counts(grouped)
                for _ in range(rounds):
                    raw_ctx = (
                        raw_pg_workers(url, threads, accounts, hot=True)
                        if backend == "postgresql"
                        else raw_sqlite_workers(raw_path, threads)
                    )
                    with raw_ctx as make_raw:
                        raw_runs.append(run_threads(make_raw, threads, per_round, max_ops))
                    hot_runs.append(
                        run_threads(
                            partial(ledger_cycle, ledger, ids, True),
                            threads,
                            per_round,
                            max_ops,
                        )
                    )
                    if grouped is not None:
                        group_runs.append(
                            run_threads(
                                partial(ledger_cycle, grouped, ids, True),
                                threads,
                                per_round,
                                max_ops,
                            )
                        )
                    if fast:
                        # the disk's fsync moves from minute to minute: timed in every round
                        fsyncs.append(machine.journal_fsync_us(workdir, syncs=200))
                    for path in fast:
                        fast_runs[path.name].append(path.run(ids[0], threads, per_round, max_ops))
                spread = [
                    run_threads(
                        partial(ledger_cycle, ledger, ids, False),
                        threads,
                        cell_seconds,
                        max_ops,
                    )
                ]
                cell: dict[str, Any] = {
                    "ledger_hot": summarize(hot_runs),
                    "ledger_spread": summarize(spread),
                    "raw_hot": summarize(raw_runs),
                }
                cell["hot_vs_raw"] = r(
                    (cell["ledger_hot"]["per_s"] or 0) / cell["raw_hot"]["per_s"]
                    if cell["raw_hot"]["per_s"]
                    else float("nan"),
                    3,
                )
                if group_runs:
                    cell["ledger_hot_group_commit"] = summarize(group_runs)
                    cell["group_commit_hot_vs_raw"] = r(
                        (cell["ledger_hot_group_commit"]["per_s"] or 0) / cell["raw_hot"]["per_s"]
                        if cell["raw_hot"]["per_s"]
                        else float("nan"),
                        3,
                    )
                    batches, operations = (
                        a - b for a, b in zip(_batch_counts(grouped), batches_before, strict=True)
                    )
                    cell["group_commit_ops_per_batch"] = r(operations / batches if batches else 0.0, 2)
                if fsyncs:
                    cell["journal_fsync_us"] = {
                        key: r(statistics.median(f[key] for f in fsyncs), 1) for key in ("p50", "p99", "mean")
                    }
                for path in fast:
                    summary = summarize(fast_runs[path.name])
                    cell[f"ledger_hot_{path.name}"] = summary | path.counts()
                    cell[f"{path.name}_hot_vs_raw"] = r(
                        (summary["per_s"] or 0) / cell["raw_hot"]["per_s"]
                        if cell["raw_hot"]["per_s"]
                        else float("nan"),
                        3,
                    )
                res[f"threads_{threads}"] = cell
                log(
                    f"  ledger {backend:10s} threads={threads}: hot {cell['ledger_hot']['per_s']}/s, "
                    f"{accounts} accounts {cell['ledger_spread']['per_s']}/s, "
                    f"raw UPDATE+INSERT {cell['raw_hot']['per_s']}/s"
                    + (
                        f", hot with group commit {cell['ledger_hot_group_commit']['per_s']}/s "
                        f"({cell['group_commit_ops_per_batch']} ops/batch)"
                        if group_runs
                        else ""
                    )
                    + "".join(f", hot with {p.name} {cell[f'ledger_hot_{p.name}']['per_s']}/s" for p in fast)
                )
            for path in fast:
                path.journal.flush(120)
            problems = ledger.audit()
            res["audit_problems"] = problems[:5]
        finally:
            for path in fast:
                path.close()
            ledger.dispose()
            if grouped is not None:
                grouped.dispose()
        out[backend] = res
    return out


# -- statement and round-trip counts, per-op timing ---------------------------------------------


def _verb(statement: str) -> str:
    word = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
    return word


def count_statements(url: str, backend: str, workdir: Path, cycles: int = 200) -> dict[str, Any]:
    """SQL statements (and on PostgreSQL wire round trips) of one hold, one settle, one balance read.

    Statements: SQLAlchemy ``before_cursor_execute`` events (on SQLite that includes
    the ``BEGIN IMMEDIATE`` the ledger issues) plus the DBAPI ``commit``.
    Round trips (PostgreSQL): libpq's protocol trace of every pooled connection,
    counting the client's ``Query`` and ``Sync`` messages, so the pool's pre-ping,
    psycopg's ``BEGIN`` and the ``COMMIT`` are included.
    """
    ledger, ids = open_books(url, 1)
    stmts: Counter[str] = Counter()
    trace_path = workdir / f"libpq-trace-{backend}.txt"
    tracing = backend == "postgresql"
    trace_fd = os.open(trace_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND) if tracing else -1
    engine = ledger._engine  # the bench looks inside on purpose

    def _stmt(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        stmts[_verb(statement)] += 1

    def _commit(_conn: Any) -> None:
        stmts["COMMIT"] += 1

    def _trace(dbapi_connection: Any, _record: Any) -> None:
        pgconn = dbapi_connection.pgconn
        # libpq fdopen()s and, on untrace, fclose()s what it is given: give it a copy
        pgconn.trace(os.dup(trace_fd))
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE)

    event.listen(engine, "before_cursor_execute", _stmt)
    event.listen(engine, "commit", _commit)
    if tracing:
        engine.dispose()  # connections made from here on are traced
        event.listen(engine, "connect", _trace)

    def trips() -> int:
        """Client messages that wait for the server so far: ``Query`` and ``Sync``."""
        if not tracing:
            return 0
        _LIBC.fflush(None)  # libpq writes its trace through a buffered FILE*
        n = 0
        with open(trace_path, errors="replace") as fh:
            for line in fh:
                parts = line.split("\t", 3)
                if (
                    len(parts) >= 3
                    and parts[0] == "F"
                    and parts[2].split(" ", 1)[0].strip() in ("Query", "Sync")
                ):
                    n += 1
        return n

    # warm the pool and statement caches, then measure one of each on a pooled connection
    for _ in range(3):
        hold = ledger.hold(ids[0], HOLD_MICRO, ttl_seconds=900)
        ledger.settle(hold.id, CHARGE_MICRO, USAGE)
        ledger.balance(ids[0])
    held: list[Any] = []
    ops: dict[str, Callable[[], Any]] = {
        "hold": lambda: held.append(
            ledger.hold(ids[0], HOLD_MICRO, ttl_seconds=900, reference="bench-gpt-4o")
        ),
        "settle": lambda: ledger.settle(held[-1].id, CHARGE_MICRO, USAGE),
        "balance": lambda: ledger.balance(ids[0]),
    }
    result: dict[str, Any] = {}
    for name, op in ops.items():
        before = trips()
        stmts.clear()
        op()
        counted = Counter(stmts)
        result[name] = {"round_trips": trips() - before} if tracing else {}
        result[name]["statements"] = sum(v for k, v in counted.items() if k not in ("BEGIN", "COMMIT"))
        result[name]["by_verb"] = dict(sorted(counted.items()))
    event.remove(engine, "before_cursor_execute", _stmt)
    event.remove(engine, "commit", _commit)
    if tracing:
        event.remove(engine, "connect", _trace)
        engine.dispose()
        os.close(trace_fd)

    # per-op wall time and per-statement time, one thread, no tracing
    timings: dict[str, list[float]] = {"hold": [], "settle": [], "balance": []}
    per_stmt: dict[str, float] = {}
    per_stmt_n: Counter[str] = Counter()

    def _t0(conn: Any, _cursor: Any, _statement: str, *_args: Any) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    def _t1(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        label = " ".join(statement.split()[:3])[:48]
        per_stmt[label] = per_stmt.get(label, 0.0) + time.perf_counter() - conn.info.pop("bench_t0", 0.0)
        per_stmt_n[label] += 1

    event.listen(engine, "before_cursor_execute", _t0)
    event.listen(engine, "after_cursor_execute", _t1)
    deadline = time.monotonic() + 20
    done = 0
    for _ in range(cycles):
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        hold = ledger.hold(ids[0], HOLD_MICRO, ttl_seconds=900, reference="bench-gpt-4o")
        t1 = time.perf_counter()
        ledger.settle(hold.id, CHARGE_MICRO, USAGE)
        t2 = time.perf_counter()
        ledger.balance(ids[0])
        t3 = time.perf_counter()
        timings["hold"].append((t1 - t0) * 1e3)
        timings["settle"].append((t2 - t1) * 1e3)
        timings["balance"].append((t3 - t2) * 1e3)
        done += 1
    event.remove(engine, "before_cursor_execute", _t0)
    event.remove(engine, "after_cursor_execute", _t1)
    for name, values in timings.items():
        result[name]["p50_ms"] = r(percentile(values, 50), 3)
        result[name]["mean_ms"] = r(sum(values) / len(values), 3) if values else None
    cycle_ms = sum(sum(v) for v in timings.values()) / done if done else 0.0
    in_statements = sum(per_stmt.values()) * 1e3 / done if done else 0.0
    result["per_cycle"] = {
        "cycles": done,
        "hold_settle_balance_ms": r(cycle_ms, 3),
        "in_statement_execution_ms": r(in_statements, 3),
        "outside_statements_ms": r(cycle_ms - in_statements, 3),
        "statements_ms": {k: r(v * 1e3 / done, 3) for k, v in sorted(per_stmt.items(), key=lambda kv: -kv[1])}
        if done
        else {},
    }
    ledger.dispose()
    return result


# -- where the time goes ----------------------------------------------------------------------


_BUCKETS = (
    (
        "database driver (sqlite3 / psycopg, incl. waiting for the server)",
        ("sqlite3", "psycopg", "socket", "select"),
    ),
    ("SQLAlchemy (ORM, Core, pool)", ("sqlalchemy",)),
    ("ledger package", ("/ledger/",)),
)


def profile(url: str, backend: str, cycles: int = 1000, seconds: float = 15.0) -> dict[str, Any]:
    """cProfile of hold+settle cycles on one thread: time by layer and the top functions."""
    ledger, ids = open_books(url, 1)
    cycle = ledger_cycle(ledger, ids, True, 0)
    cycle()
    prof = cProfile.Profile()
    deadline = time.monotonic() + seconds
    done = 0
    prof.enable()
    while done < cycles and time.monotonic() < deadline:
        cycle()
        done += 1
    prof.disable()
    ledger.dispose()
    stats = pstats.Stats(prof)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())  # tottime
    buckets: Counter[str] = Counter()
    rows = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        where = f"{filename}:{func}"
        label = "other (stdlib, uuid, datetime, dataclasses, ...)"
        for name, needles in _BUCKETS:
            if any(n in where for n in needles):
                label = name
                break
        buckets[label] += tottime
        rows.append((tottime, ncalls, cumtime, _short(filename), line, func))
    rows.sort(reverse=True)
    return {
        "cycles": done,
        "profiled_s": r(total, 3),
        "ms_per_cycle_profiled": r(total / done * 1e3, 3) if done else None,
        "share_by_layer": {k: r(v / total * 100, 1) for k, v in buckets.most_common()},
        "top_tottime": [
            {
                "function": f"{f}:{ln}({fn})",
                "calls_per_cycle": r(nc / done, 1),
                "tottime_ms_per_cycle": r(tt / done * 1e3, 4),
            }
            for tt, nc, _ct, f, ln, fn in rows[:12]
        ],
    }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def sqlite_url(workdir: Path, name: str) -> str:
    return f"sqlite:///{workdir / name}"


def tempdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="credits-bench-")
