"""``--commit REV``: run a bench module again on a snapshot of that commit's ``src/``.

Others may be editing the work tree while a run takes minutes; a ``git archive``
snapshot makes the figures belong to one commit. The bench itself still runs
from the work tree. Must run before anything imports ``ledger`` or ``credit_hooks``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PREFIX = "credits-bench-src-"


def reexec_on_commit(module: str, argv: list[str]) -> None:
    """With ``--commit REV`` in ``argv``: exec ``python -m module argv`` on a snapshot of REV's ``src/``."""
    if "--commit" not in argv or os.environ.get("BENCH_MEASURED_COMMIT"):
        return
    at = argv.index("--commit")
    if at + 1 >= len(argv):
        sys.exit("--commit needs a revision")
    repo = Path(__file__).resolve().parents[1]
    sha = subprocess.run(
        ["git", "rev-parse", "--short", argv[at + 1]], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    dest = Path(tempfile.mkdtemp(prefix=PREFIX))
    archive = subprocess.run(["git", "archive", sha, "src"], cwd=repo, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    path = os.pathsep.join(p for p in (str(dest / "src"), str(repo), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "BENCH_MEASURED_COMMIT": sha, "BENCH_SRC_SNAPSHOT": str(dest)}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)


def drop_snapshot() -> None:
    snapshot = os.environ.get("BENCH_SRC_SNAPSHOT")
    if snapshot and Path(snapshot).name.startswith(PREFIX):
        shutil.rmtree(snapshot, ignore_errors=True)
