"""What machine and software the figures were measured on."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .stats import percentile


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(repo: Path, *args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_times() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields), idle


def busy_percent(seconds: float = 1.0) -> float:
    """How busy all cores were over ``seconds`` (others' work: the bench is idle meanwhile)."""
    total0, idle0 = _cpu_times()
    time.sleep(seconds)
    total1, idle1 = _cpu_times()
    dt = total1 - total0
    return round(100.0 * (1 - (idle1 - idle0) / dt), 1) if dt else 0.0


def journal_fsync_us(directory: Path, syncs: int = 400) -> dict[str, float]:
    """How long the disk under ``directory`` takes to make one journal line durable.

    What ``SettleJournal.record`` does for each charge: a line of a few hundred bytes
    appended to a file reserved ahead (``posix_fallocate``), then ``fdatasync``. One
    thread recording charges one after another waits for one of these per charge, so
    1 / mean is the most charges per second it can record, whatever the code around."""
    return fsync_summary(fsync_samples(directory, syncs))


def fsync_samples(directory: Path, syncs: int) -> list[float]:
    """``journal_fsync_us``'s timings, µs each, for callers that pool several probes."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    took: list[float] = []
    try:
        os.posix_fallocate(fd, 0, 4 << 20)
        os.fsync(fd)
        line = b"x" * 399 + b"\n"
        for n in range(syncs):
            os.pwrite(fd, line, n * len(line))
            started = time.perf_counter()
            os.fdatasync(fd)
            took.append((time.perf_counter() - started) * 1e6)
    finally:
        os.close(fd)
        path.unlink()
    return took


def fsync_summary(took: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(took, 50), 1),
        "p99": round(percentile(took, 99), 1),
        "mean": round(sum(took) / len(took), 1),
    }


def describe(pg_version: str | None) -> dict[str, Any]:
    import ledger

    repo = Path(__file__).resolve().parents[1]
    imported = Path(ledger.__file__).resolve().parent
    from_repo = imported == (repo / "src" / "ledger").resolve()
    src_dirty = _git(repo, "status", "--porcelain", "--", "src") if from_repo else ""
    commit = os.environ.get("BENCH_MEASURED_COMMIT") or (
        _git(repo, "rev-parse", "--short", "HEAD") if from_repo else "n/a (not this work tree)"
    )
    return {
        "nproc": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gib": _mem_total_gib(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "litellm": _version("litellm"),
        "sqlalchemy": _version("sqlalchemy"),
        "psycopg": _version("psycopg"),
        "sqlite": __import__("sqlite3").sqlite_version,
        "postgresql": pg_version or "not reachable",
        "git_commit": commit,
        "src_uncommitted_changes": bool(src_dirty),
        "ledger_imported_from": str(imported),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "others_cpu_busy_pct_at_start": busy_percent(1.0),
    }
