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


def reexec_under_callgrind(module: str, argv: list[str]) -> None:
    """With ``--callgrind`` in ``argv``: exec ``valgrind ... python -m module argv`` (once)."""
    if "--callgrind" not in argv or active():
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("--callgrind needs valgrind and callgrind_control on PATH")
    out = tempfile.mkdtemp(prefix="bench-callgrind-")
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}/callgrind.out.%p",
        "--log-file=" + f"{out}/valgrind.log",
        sys.executable,  # the real interpreter: a launcher script would exec out of valgrind
        "-m",
        module,
        *argv,
    ]
    sys.stdout.flush()
    os.execvpe("valgrind", command, {**os.environ, ENV: out})


def _control(*args: str) -> str:
    done = subprocess.run(
        ["callgrind_control", *args, str(os.getpid())], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0 or "not detected" in done.stdout + done.stderr:
        raise RuntimeError(f"callgrind_control {' '.join(args)}: {done.stdout} {done.stderr}")
    return done.stdout


@contextmanager
def counting() -> Iterator[list[int]]:
    """Instructions of every thread of this process inside the block, appended to the
    yielded list on exit; nothing when not under callgrind."""
    counted: list[int] = []
    if not active():
        yield counted
        return
    _control("--instr=on")
    _control("--zero")
    try:
        yield counted
    finally:
        totals = _control("-e", "Ir")
        _control("--instr=off")
        counted.append(sum(int(n.replace(",", "")) for n in _THREAD_TOTAL.findall(totals)))
