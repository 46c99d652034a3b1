"""The benchmark's disk probe: what one journal line's fsync costs, and nothing left behind."""

from __future__ import annotations

from pathlib import Path

from bench.machine import fsync_samples, fsync_summary, journal_fsync_us

from bench import report


def test_it_times_fsyncs_of_journal_lines_and_removes_its_file(tmp_path: Path) -> None:
    fsync = journal_fsync_us(tmp_path, syncs=50)
    assert 0 < fsync["p50"] <= fsync["p99"]
    assert fsync["mean"] > 0
    assert list(tmp_path.iterdir()) == []


def test_probes_taken_between_rounds_pool_into_one_summary(tmp_path: Path) -> None:
    took = fsync_samples(tmp_path, 20) + fsync_samples(tmp_path, 20)
    assert len(took) == 40 and all(t > 0 for t in took)
    assert list(tmp_path.iterdir()) == []
    assert fsync_summary([100.0, 200.0, 300.0, 400.0]) == {"p50": 250.0, "p99": 397.0, "mean": 250.0}


def test_the_report_shows_the_disk_beside_the_proxy_rounds() -> None:
    proxy = {"levels": {}, "disk_fsync_us": {"c1": {"p50": 161.5, "p99": 402.0, "mean": 180.2}}}
    section = report.disk_section(proxy)
    assert section is not None
    title, headers, rows = section
    assert "disk" in title and headers == ["level", "p50", "p99", "mean"]
    assert rows == [["c1", "161.5", "402.0", "180.2"]]
    assert report.disk_section({"levels": {}}) is None  # results written before the probe
