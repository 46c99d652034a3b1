"""The fsync that keeps the interpreter lock, for timing the disk (``ledger.disk_sync``)."""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from pathlib import Path

import pytest

from ledger import disk_sync


def test_it_syncs_a_file_and_names_what_went_wrong_with_a_bad_descriptor(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "journal", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"a line\n")
        disk_sync.fdatasync_keeping_lock(fd)
    finally:
        os.close(fd)
    assert (tmp_path / "journal").read_bytes() == b"a line\n"
    with pytest.raises(OSError) as raised:
        disk_sync.fdatasync_keeping_lock(fd)  # closed by now
    assert raised.value.errno == errno.EBADF


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the C library's fdatasync is Linux's")
def test_on_linux_it_calls_the_c_library_without_letting_go_of_the_interpreter_lock() -> None:
    # os.fdatasync lets go of the lock and waits to get it back: the wait the timing must
    # not hold. A function of a ctypes.PyDLL keeps it (the Python-API calling flag).
    function = disk_sync._FDATASYNC
    assert function is not None
    assert function._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # type: ignore[attr-defined]
