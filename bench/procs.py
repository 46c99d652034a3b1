"""Child processes of the benchmark: start (optionally pinned to a core), track, measure, stop.

Every child is started in its own process group and recorded here; ``stop_all``
ends each recorded group (TERM, then KILL) and runs on normal exit, on an
exception, on Ctrl+C (KeyboardInterrupt unwinds to it) and on SIGTERM/SIGHUP
(turned into SystemExit). Nothing here ends a process it did not start.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_children: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    cpus: set[int] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in a new process group; with ``cpus`` it runs (with its children) on those cores."""

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    proc = subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
        process_group=0,
        preexec_fn=pin if cpus else None,
    )
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """TERM the child's process group, then KILL it if it does not go in ``timeout`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    # the leader may be gone while its children (uvicorn workers) linger in the group
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    if proc in _children:
        _children.remove(proc)


def stop_all() -> None:
    for proc in list(reversed(_children)):
        stop(proc, timeout=10.0)


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    atexit.register(stop_all)
    # Ctrl+C raises KeyboardInterrupt even where the parent shell made SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)


# -- memory ----------------------------------------------------------------------


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def descendants(pid: int) -> list[int]:
    """All living descendants of ``pid`` (from /proc/*/stat parent ids)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        ppid = int(_fields(stat)[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_rss_mb(pid: int) -> dict[str, float | int]:
    """VmRSS of ``pid`` and of all its descendants (MB = 2**20 bytes), and its peak (VmHWM)."""
    kids = descendants(pid)
    own = _status_kb(pid, "VmRSS")
    total = own + sum(_status_kb(k, "VmRSS") for k in kids)
    return {
        "rss_mb": round(total / 1024, 1),
        "main_rss_mb": round(own / 1024, 1),
        "peak_main_rss_mb": round(_status_kb(pid, "VmHWM") / 1024, 1),
        "processes": 1 + len(kids),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) and its living descendants."""
    return sum(cpu_times(pid))


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time of ``pid`` (all its threads) and its living descendants."""
    return _cpu_times(_stat_files((pid, *descendants(pid))))


def cpu_seconds_of(pids: Sequence[int]) -> float:
    """User + system CPU time of these processes (those still alive)."""
    return sum(_cpu_times(_stat_files(pids)))


def loop_thread_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid``'s main thread: in the proxy, the event loop's
    (``threads``' "event loop", which a round reads with the other threads at once)."""
    return threads(pid).get("event loop", ThreadUse()).cpu_s


_SWITCH_FIELDS = ("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")


@dataclass(frozen=True)
class ThreadUse:
    """What one thread (or the threads of one name) of a process used so far."""

    cpu_s: float = 0.0
    switches: int = 0  # voluntary and involuntary context switches
    minor_faults: int = 0  # pages the kernel mapped in on first touch

    def __add__(self, other: ThreadUse) -> ThreadUse:
        return ThreadUse(
            self.cpu_s + other.cpu_s, self.switches + other.switches, self.minor_faults + other.minor_faults
        )

    def __sub__(self, other: ThreadUse) -> ThreadUse:
        return ThreadUse(
            self.cpu_s - other.cpu_s, self.switches - other.switches, self.minor_faults - other.minor_faults
        )


def threads(pid: int) -> dict[str, ThreadUse]:
    """What ``pid``'s threads used so far, summed by name (the bench's proxies name
    theirs for the kernel: ``bench/gc_probe``; numbered workers of one pool count as one).

    Context switches (a hand-off between the event loop and another thread: the
    journal's writer, an fsync in the pool, the interpreter lock) and page faults cost
    the kernel's time and the caches, which instruction counts do not see."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[str, ThreadUse] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return found
    for task in tasks:
        try:
            name = (task / "comm").read_text().strip()
            fields = stat_fields(task / "stat")
            lines = (task / "status").read_text().splitlines()
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
        name = "event loop" if task.name == str(pid) else re.sub(r"[_-]?\d+$", "", name) or name
        use = ThreadUse(
            cpu_s=(int(fields[11]) + int(fields[12])) / tick,
            switches=sum(int(line.split()[1]) for line in lines if line.startswith(_SWITCH_FIELDS)),
            minor_faults=int(fields[7]),
        )
        found[name] = found.get(name, ThreadUse()) + use
    return found


def stat_fields(stat: Path) -> list[str]:
    """A /proc stat file's fields after the command name: 0 state, 1 parent, 7 minor
    faults, 11 and 12
    user and system ticks, 13 and 14 those of the children it has reaped."""
    return _fields(stat.read_text())


def _fields(text: str) -> list[str]:
    # the command name is in parentheses and may hold spaces and parentheses itself
    return text.rsplit(")", 1)[1].split()


def _stat_files(pids: Sequence[int]) -> list[Path]:
    return [Path(f"/proc/{p}/stat") for p in pids]


def _cpu_times(stat_files: Sequence[Path]) -> tuple[float, float]:
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for stat in stat_files:
        try:
            fields = stat_fields(stat)
        except (FileNotFoundError, ProcessLookupError):
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / tick, system / tick


def wait_port_line(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """Read ``PORT <n>`` from a child's stdout (the fake upstream prints it when listening)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(b"PORT "):
            return int(line.split()[1])
    raise RuntimeError("the fake upstream did not start")
