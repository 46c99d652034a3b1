"""Instructions counted by valgrind's callgrind: the one figure the machine's load cannot move.

On this kind of virtual machine the other tenants take 20-35 % of the cores ("steal")
and CPU time per call moves by ±30 % between rounds; the count of instructions a
piece of code executes is the same run after run. ``python -m bench.hooks_bench
--callgrind`` re-executes itself under ``valgrind --tool=callgrind --instr-atstart=no``
and counts only inside ``counting()`` blocks (every thread of the process), toggled
through ``callgrind_control``. Instructions are not time: a syscall's (an fsync's)
wait and the database server's work are not in them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "BENCH_CALLGRIND"
_THREAD_TOTAL = re.compile(r"Th\s+\d+\s+([\d,]+)")


def active() -> bool:
    return bool(os.environ.get(ENV))


# Whatever runs per second of wall time (a catalog poll, a sweeper, a batch per linger)
# would be counted some 50x per call under callgrind: the plugin's linger is cut by
# batch size instead (as large as natively at ~100 calls/s) and its jobs wait.
PLUGIN_SETTINGS = {
    "CREDITS_JOURNAL_LINGER_MS": "10000",
    "CREDITS_CATALOG_RELOAD_SECONDS": "3600",
    "CREDITS_SWEEP_INTERVAL_SECONDS": "3600",
    "CREDITS_ACCOUNT_CACHE_SECONDS": "3600",
}


def check_tools() -> None:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("counting instructions needs valgrind and callgrind_control on PATH")


def wrapper(out_dir: str) -> list[str]:
    """The command prefix that runs a Python program under callgrind, counting nothing
    until told. Put the real interpreter after it: a launcher script (a pyenv shim)
    would exec out of valgrind."""
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_dir}/callgrind.out.%p",
        f"--log-file={out_dir}/valgrind.%p.log",
    ]


def reexec_under_callgrind(module: str, argv: list[str]) -> None:
    """With ``--callgrind`` in ``argv``: exec ``valgrind ... python -m module argv`` (once)."""
    if "--callgrind" not in argv or active():
        return
    check_tools()
    out = tempfile.mkdtemp(prefix="bench-callgrind-")
    command = [*wrapper(out), sys.executable, "-m", module, *argv]
    sys.stdout.flush()
    os.execvpe("valgrind", command, {**os.environ, ENV: out})


def _control(*args: str, pid: int | None = None) -> str:
    done = subprocess.run(
        ["callgrind_control", *args, str(pid or os.getpid())], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0 or "not detected" in done.stdout + done.stderr:
        raise RuntimeError(f"callgrind_control {' '.join(args)}: {done.stdout} {done.stderr}")
    return done.stdout


@contextmanager
def counting(pid: int | None = None) -> Iterator[list[int]]:
    """Instructions of every thread of process ``pid`` (this one by default) inside the
    block, appended to the yielded list on exit; nothing when this process is not
    under callgrind and no ``pid`` is given."""
    counted: list[int] = []
    if pid is None and not active():
        yield counted
        return
    _control("--instr=on", pid=pid)
    _control("--zero", pid=pid)
    try:
        yield counted
    finally:
        totals = _control("-e", "Ir", pid=pid)
        _control("--instr=off", pid=pid)
        counted.append(sum(int(n.replace(",", "")) for n in _THREAD_TOTAL.findall(totals)))
