"""A private PostgreSQL server for tests that stop and start the database.

The machine's shared server (port 5432) is used by other tests and must never
be stopped, so an outage test runs its own: ``initdb`` into a temporary
directory, ``pg_ctl start`` on a free loopback port, and ``stop``/``start`` at
will. As root, the server binaries run as the ``postgres`` OS user (PostgreSQL
refuses to run as root). Locally a machine without the binaries skips; in CI
(``CI=true``) it fails loudly.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from e2e.proxy import free_port


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PrivatePostgres:
    bin_dir: Path
    root: Path
    port: int
    run_as: str | None  # OS user the server runs as (None: the current user)
    running: bool = field(default=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.run_as is not None:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data_dir), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=100"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "start",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``immediate`` is a crash: no checkpoint, clients cut off, WAL replayed at the next start."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")
        self.running = False

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"private PostgreSQL unavailable ({reason}); CI=true, so this fails instead of skipping",
            pytrace=False,
        )
    pytest.skip(f"private PostgreSQL unavailable: {reason}")


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A running PostgreSQL server of this test's own, removed afterwards."""
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        _unavailable("no initdb/pg_ctl found in /usr/lib/postgresql/*/bin or on PATH")
    assert bin_dir is not None
    run_as: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' OS user to run the server as")
        run_as = "postgres"
    root = Path(tempfile.mkdtemp(prefix="credits-private-pg-"))
    if run_as is not None:
        shutil.chown(root, user=run_as)
    server = PrivatePostgres(bin_dir, root, free_port(), run_as)
    try:
        try:
            server.init()
            server.start()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            _unavailable(str(exc))
        yield server
    finally:
        if server.running:
            with contextlib.suppress(RuntimeError):
                server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
