"""The benchmark's disk probe: what one journal line's fsync costs, and nothing left behind."""

from __future__ import annotations

from pathlib import Path

from bench.machine import journal_fsync_us


def test_it_times_fsyncs_of_journal_lines_and_removes_its_file(tmp_path: Path) -> None:
    fsync = journal_fsync_us(tmp_path, syncs=50)
    assert 0 < fsync["p50"] <= fsync["p99"]
    assert fsync["mean"] > 0
    assert list(tmp_path.iterdir()) == []
