"""A variant's figures from several proxy processes (``proxy_bench.replicas``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import proxy_bench


def _round(ok: int, seconds: float, cpu_s: float) -> dict[str, Any]:
    return {
        "ok": ok,
        "elapsed_s": seconds,
        "latencies_ms": [10.0] * ok,
        "proxy_cpu_s": cpu_s,
        "errors": 0,
        "first_error": "",
        "charged": ok,
    }


def _processes(group: str, plugin: bool, processes: int) -> list[proxy_bench.Variant]:
    return proxy_bench.replicas(
        lambda name: proxy_bench.Variant(name, plugin, None, Path("/nonexistent")), group, processes
    )


def test_each_process_of_a_variant_has_a_name_of_its_own_and_the_variants_as_group() -> None:
    made = _processes("with_sqlite", True, 3)
    assert [v.name for v in made] == ["with_sqlite", "with_sqlite#2", "with_sqlite#3"]
    assert {v.group for v in made} == {"with_sqlite"}
    assert proxy_bench.Variant("alone", False, None, Path("/nonexistent")).group == "alone"


def test_a_round_takes_each_groups_processes_in_turn_so_no_group_has_a_block_of_it() -> None:
    variants = (
        _processes("without", False, 2) + _processes("with_sqlite", True, 2) + _processes("master", True, 1)
    )
    order = [v.name for v in proxy_bench.interleaved(variants)]
    assert order == ["without", "with_sqlite", "master", "without#2", "with_sqlite#2"]
    assert proxy_bench.interleaved(_processes("alone", False, 1))[0].name == "alone"
    assert proxy_bench.interleaved([]) == []


def test_a_variants_figures_come_from_the_rounds_of_all_its_processes() -> None:
    variants = _processes("without", False, 2) + _processes("with_sqlite", True, 2)
    per_process = {
        "without": [_round(400, 4.0, 4.0), _round(440, 4.0, 4.0)],  # 105 req/s
        "without#2": [_round(360, 4.0, 4.0), _round(400, 4.0, 4.0)],  # 95
        "with_sqlite": [_round(300, 4.0, 4.0), _round(340, 4.0, 4.0)],  # 80
        "with_sqlite#2": [_round(400, 4.0, 4.0), _round(400, 4.0, 4.0)],  # 100
    }
    level = proxy_bench.by_group(variants, per_process)
    assert set(level) == {"without", "with_sqlite"}
    assert level["without"]["rps"] == 100.0  # 1,600 requests in 16 s
    assert level["with_sqlite"]["rps"] == 90.0  # 1,440 in 16 s: neither process's alone
    assert level["without"]["processes_rps"] == [105.0, 95.0]
    assert level["with_sqlite"]["processes_rps"] == [80.0, 100.0]
    assert level["with_sqlite"]["requests"] == 1_440
    assert level["with_sqlite"]["rounds_rps"] == [75.0, 85.0, 100.0, 100.0]
    low, high = level["with_sqlite"]["x_without_interval"]
    assert low < 0.9 < high
    assert "x_without_interval" not in level["without"]


def test_a_variants_memory_is_the_mean_of_its_processes() -> None:
    one = {"rss_mb": 300.0, "main_rss_mb": 290.0, "peak_main_rss_mb": 310.0, "processes": 1}
    two = {"rss_mb": 320.5, "main_rss_mb": 300.0, "peak_main_rss_mb": 330.0, "processes": 1}
    assert proxy_bench.mean_of([one, two]) == {
        "rss_mb": 310.2,
        "main_rss_mb": 295.0,
        "peak_main_rss_mb": 320.0,
        "processes": 1.0,
    }
    assert proxy_bench.mean_of([one]) is one


def test_a_process_that_exited_is_left_out_of_its_variants_memory() -> None:
    variants = _processes("without", False, 2) + _processes("with_sqlite", True, 1)
    live = {"rss_mb": 377.8, "main_rss_mb": 377.8, "peak_main_rss_mb": 377.8, "processes": 1}
    warm = {"rss_mb": 331.3, "main_rss_mb": 331.3, "peak_main_rss_mb": 331.3, "processes": 1}
    plugin = {"rss_mb": 417.2, "main_rss_mb": 417.2, "peak_main_rss_mb": 417.2, "processes": 1}
    memory = proxy_bench.group_memory(
        variants,
        {
            "without": {"after_warmup": warm, "after_load": live},
            "without#2": {"after_warmup": warm, "after_load": None, "exit_code": 1},
            "with_sqlite": {"after_warmup": warm, "after_load": plugin},
        },
    )
    assert memory["without"]["after_load"]["rss_mb"] == 377.8  # not (377.8 + 0) / 2
    assert memory["with_sqlite"]["after_load"]["rss_mb"] == 417.2
    gone = proxy_bench.group_memory(
        variants[:1], {"without": {"after_warmup": warm, "after_load": None, "exit_code": -9}}
    )
    assert gone == {}
