"""Which process owns which settle-journal directory.

Every process (a proxy, each of its workers) writes its journal in a directory of its
own under the configured base, holding an exclusive ``flock`` on the directory's lock
file for as long as it lives. The kernel drops the lock when the process dies, however
it dies, so a directory whose lock can be taken belongs to nobody any more: its
segments are charges that process recorded and may not have applied, and whoever
takes the lock applies them. Two live processes can therefore never apply, rotate or
delete each other's segments.

A directory also names the database its charges belong to (``DATABASE_NAME``: a digest
of the ledger's URL without its password), and only a process of that same database
takes a dead one's directory. Several proxies on different databases may share one base
(the default base is next to the outbox, in the working directory): a charge line
carries account and hold ids, which in another database are other accounts' ids.
A directory that names no database is left alone.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = "owner.lock"
DATABASE_NAME = "database"
PREFIX = "proc-"


def _try_lock(directory: Path) -> int | None:
    """An fd holding the directory's lock, or None when a live process holds it."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def database_of(directory: Path) -> str | None:
    try:
        return (directory / DATABASE_NAME).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def claim(base: Path, database: str) -> tuple[Path, int]:
    """A new directory for this process under ``base``, locked and naming ``database``;
    returns it and the lock fd."""
    base.mkdir(parents=True, exist_ok=True)
    directory = base / f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    directory.mkdir()
    fd = _try_lock(directory)
    assert fd is not None, "a directory made a moment ago is locked by someone else"
    # named before any segment is written in it, so a crash never leaves one unnamed
    (directory / DATABASE_NAME).write_text(database + "\n", encoding="utf-8")
    return directory, fd


@contextmanager
def orphans(base: Path, database: str) -> Iterator[list[Path]]:
    """The directories under ``base`` of ``database`` whose process is gone, locked while
    the block runs."""
    held: list[tuple[Path, int]] = []
    try:
        if base.is_dir():
            for directory in sorted(base.glob(f"{PREFIX}*")):
                if directory.is_dir() and database_of(directory) == database:
                    fd = _try_lock(directory)
                    if fd is not None:
                        held.append((directory, fd))
        yield [directory for directory, _ in held]
    finally:
        for _, fd in held:
            os.close(fd)


def release(directory: Path, fd: int, *, remove: bool) -> None:
    """Give the directory up; ``remove`` it (with its lock and name) when nothing else is in it."""
    if remove:
        remove_if_empty(directory)
    os.close(fd)


def remove_if_empty(directory: Path) -> None:
    """Remove a directory holding nothing but its lock file and its database's name."""
    if not any(p.name not in (LOCK_NAME, DATABASE_NAME) for p in directory.iterdir()):
        (directory / LOCK_NAME).unlink(missing_ok=True)
        (directory / DATABASE_NAME).unlink(missing_ok=True)
        directory.rmdir()
