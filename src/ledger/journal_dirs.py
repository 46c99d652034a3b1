"""Which process owns which settle-journal directory.

Every process (a proxy, each of its workers) writes its journal in a directory of its
own under the configured base, holding an exclusive ``flock`` on the directory's lock
file for as long as it lives. The kernel drops the lock when the process dies, however
it dies, so a directory whose lock can be taken belongs to nobody any more: its
segments are charges that process recorded and may not have applied, and whoever
takes the lock applies them. Two live processes can therefore never apply, rotate or
delete each other's segments.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = "owner.lock"
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


def claim(base: Path) -> tuple[Path, int]:
    """A new directory for this process under ``base``, locked; returns it and the lock fd."""
    base.mkdir(parents=True, exist_ok=True)
    directory = base / f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    directory.mkdir()
    fd = _try_lock(directory)
    assert fd is not None, "a directory made a moment ago is locked by someone else"
    return directory, fd


@contextmanager
def orphans(base: Path) -> Iterator[list[Path]]:
    """The directories under ``base`` whose process is gone, locked while the block runs."""
    held: list[tuple[Path, int]] = []
    try:
        if base.is_dir():
            for directory in sorted(base.glob(f"{PREFIX}*")):
                if directory.is_dir():
                    fd = _try_lock(directory)
                    if fd is not None:
                        held.append((directory, fd))
        yield [directory for directory, _ in held]
    finally:
        for _, fd in held:
            os.close(fd)


def release(directory: Path, fd: int, *, remove: bool) -> None:
    """Give the directory up; ``remove`` it (and its lock file) when nothing is left in it."""
    if remove and not any(p.name != LOCK_NAME for p in directory.iterdir()):
        (directory / LOCK_NAME).unlink(missing_ok=True)
        directory.rmdir()
    os.close(fd)
