"""One gate per proxy process, built on first use, with its background jobs.

The jobs run on the proxy's own event loop (there is no other server): catalog
reload, the hold sweeper, and draining the outbox of charges that could not be
written when they happened.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import logging
import threading

from ledger import Ledger
from ledger.escrow import EscrowBook
from ledger.escrow_lease import LeasedBook
from ledger.journal import SettleJournal
from ledger.migrate import ensure_schema
from ledger.outbox import Outbox
from pricing.errors import SettingsError

from .catalog_source import CatalogSource
from .gate import CreditGate
from .periods import run_periods_exclusive
from .settings import CreditSettings, EscrowMode, SettleMode, load_settings
from .shutdown import drain_at_server_shutdown

log = logging.getLogger("credits.runtime")

_lock = threading.Lock()
_gate: CreditGate | None = None
_tasks: list[asyncio.Task[None]] = []
# how long a stopping process waits for the database to take what its journal recorded
JOURNAL_CLOSE_SECONDS = 5.0


def gate() -> CreditGate:
    """The process's gate; a bad setting or catalog raises here, at start, naming the culprit."""
    global _gate
    if _gate is None:
        with _lock:
            if _gate is None:
                settings = load_settings()
                ledger = Ledger(
                    settings.database_url,
                    group_commit=settings.group_commit,
                    async_holds=settings.async_holds,
                )
                # the embedded SQLite file is created or upgraded in place; a PostgreSQL
                # shared by replicas is migrated by the operator (credits-admin db init)
                if ledger.dialect == "sqlite":
                    ensure_schema(settings.database_url)
                catalogs = CatalogSource(settings.pricing_file, ledger.catalog_rows, ledger.catalog_stamp)
                journal, escrow = _fast_paths(settings, ledger)
                _gate = CreditGate(
                    settings, catalogs, ledger, Outbox(settings.outbox_path), journal=journal, escrow=escrow
                )
                log.warning(
                    "litellm-credits ready: ledger %s%s, catalog %s (version %s)",
                    ledger.url,
                    _describe(settings),
                    settings.pricing_file,
                    catalogs.current.version,
                )
    return _gate


def _fast_paths(
    settings: CreditSettings, ledger: Ledger
) -> tuple[SettleJournal | None, EscrowBook | LeasedBook | None]:
    journal = None
    if settings.settle_mode is SettleMode.JOURNAL:
        # what processes now gone recorded but did not apply is charged before anything new
        try:
            journal = SettleJournal(
                ledger,
                settings.journal_directory,
                linger_seconds=settings.journal_linger_ms / 1000,
                fast_sync_seconds=settings.journal_loop_sync_ms / 1000,
            )
        except OSError as exc:
            # the journal is the default: a proxy started where it cannot write says so
            raise SettingsError(
                "CREDITS_JOURNAL_DIR",
                f"cannot keep the settle journal in {settings.journal_directory} ({exc.strerror or exc}); "
                "point it at a writable directory, or set CREDITS_SETTLE_MODE=direct",
            ) from exc
        if journal.recovered:
            log.warning("settle journal: %d charges of a previous process applied", journal.recovered)
        # at exit: a few seconds to apply what is recorded; the rest waits for the next start
        # (a server stopped by a signal is drained earlier: credit_hooks.shutdown)
        atexit.register(journal.close, JOURNAL_CLOSE_SECONDS)
    escrow: EscrowBook | LeasedBook | None = None
    sizing = {
        "ttl_seconds": settings.hold_ttl_seconds,
        "calls_per_escrow": settings.escrow_calls,
        "rich_factor": settings.escrow_rich_factor,
    }
    if settings.escrow is EscrowMode.LOCAL:
        escrow = EscrowBook.in_memory(ledger, **sizing)
    elif settings.escrow is EscrowMode.REDIS:
        assert settings.redis_url is not None  # the settings refuse redis without it
        shared = EscrowBook.on_redis(ledger, settings.redis_url, prefix=redis_prefix(settings), **sizing)
        # each process lends blocks of the shared escrow from memory: one Redis round trip
        # per block instead of two per call
        escrow = LeasedBook(shared, calls_per_block=settings.escrow_block_calls)
    return journal, escrow


def redis_prefix(settings: CreditSettings) -> str:
    """Keys of one ledger database apart from another's on a shared Redis.

    An escrow id in Redis names a hold of ONE database: the same Redis pointed at by a
    proxy on another (or a re-created) database must not find it, hence a prefix per
    database URL unless CREDITS_REDIS_PREFIX says otherwise.
    """
    if settings.redis_prefix:
        return settings.redis_prefix
    digest = hashlib.sha256(settings.database_url.encode()).hexdigest()[:12]
    return f"credits-{digest}"


def _describe(settings: CreditSettings) -> str:
    parts = [
        "group commit" if settings.group_commit else "",
        _journal_part(settings),
        "async holds" if settings.async_holds else "",
        f"{settings.escrow.value} escrow" if settings.escrow is not EscrowMode.OFF else "",
    ]
    named = ", ".join(p for p in parts if p)
    return f" with {named}" if named else ""


def _journal_part(settings: CreditSettings) -> str:
    if settings.settle_mode is not SettleMode.JOURNAL:
        return ""
    if settings.journal_loop_sync_ms == 0:
        return "settle journal (every fsync waited for off the event loop)"
    return "settle journal"


def reset() -> None:
    """Forget the gate and stop its jobs (tests that change settings between cases)."""
    global _gate
    for task in _tasks:
        task.cancel()
    _tasks.clear()
    if _gate is not None:
        _gate.close()
        if _gate.journal is not None:
            _gate.journal.close()
        if _gate.escrow is not None:
            _gate.escrow.close()
        _gate.ledger.dispose()
    _gate = None


def ensure_background_jobs() -> None:
    """Start the jobs once, from inside the running loop (the first hook call)."""
    if _tasks:
        return
    g = gate()
    _tasks.extend(
        [
            asyncio.create_task(_every(g.settings.catalog_reload_seconds, _reload_catalog, g)),
            asyncio.create_task(_every(g.settings.sweep_interval_seconds, _sweep, g)),
            asyncio.create_task(_every(g.settings.sweep_interval_seconds, _drain_outbox, g)),
        ]
    )
    if g.settings.period_job_seconds > 0:
        _tasks.append(asyncio.create_task(_every(g.settings.period_job_seconds, _periods, g)))
    if (g.journal is not None or g.escrow is not None) and drain_at_server_shutdown(lambda: _stop(g)):
        log.info("the settle journal and escrows are settled when the server shuts down")


def _stop(g: CreditGate) -> None:
    """The server has stopped serving: everything recorded goes to the ledger, then the
    escrows of this process give back what they did not lend (in that order: the
    journal's charges are taken out of the escrows)."""
    if g.journal is not None:
        g.journal.close(JOURNAL_CLOSE_SECONDS)
        stats = g.journal.stats
        # where the charges' fsyncs ran: a proxy's own figures for CREDITS_JOURNAL_LOOP_SYNC_MS
        log.warning(
            "settle journal applied at shutdown (%d charges in all, %d fsyncs, %d of them off the event loop)",
            stats.applied,
            stats.fsyncs,
            stats.fsyncs_handed_off,
        )
    if isinstance(g.escrow, EscrowBook):
        given = g.escrow.give_back_unlent()
        if given:
            log.warning("escrows gave back %d µcr of unlent credit at shutdown", given)


async def _every(seconds: float, job: object, g: CreditGate) -> None:
    assert callable(job)
    while True:
        try:
            await job(g)
        except Exception:
            log.exception(
                "background job %s failed; it runs again in %ss", getattr(job, "__name__", job), seconds
            )
        await asyncio.sleep(seconds)


async def _reload_catalog(g: CreditGate) -> None:
    await g.run(g.catalogs.refresh)


async def _sweep(g: CreditGate) -> None:
    # one replica at a time (voiding twice would be harmless, but it is wasted work)
    lease = max(1.0, g.settings.sweep_interval_seconds * 0.9)
    expired = await g.run(
        g.ledger.run_exclusive, "credits-sweeper", g.ledger.expire_stale_holds, lease_seconds=lease
    )
    if expired:
        log.warning("sweeper voided %d expired holds", expired)
    g.sweep_memory()


async def _periods(g: CreditGate) -> None:
    result = await g.run(run_periods_exclusive, g.ledger, g.catalogs.current)
    if result is not None and (result.allocated or result.tier_changes or result.grants_expired):
        log.warning("billing periods: %s", result)


async def _drain_outbox(g: CreditGate) -> None:
    landed = await g.run(g.outbox.drain, g.ledger)
    if landed:
        log.warning("outbox: %d pending charges written to the ledger", landed)
    if not await g.run(g.outbox.pending):
        g.offline.outbox_drained()
