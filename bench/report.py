"""Targets, the printed table and the markdown summary, all from the results dict."""

from __future__ import annotations

from typing import Any

PROXY_THROUGHPUT_MIN_RATIO = 0.90
ADDED_P50_MAX_MS = 1.0
HOT_VS_RAW_MIN_RATIO = 1.0
ADDED_MEMORY_MAX_MB = 50.0
REDIS_FACTOR = 3

WITH = (
    "with_sqlite",
    "with_postgresql",
    "with_postgresql_async_holds",
    "with_postgresql_direct",
    "with_sqlite_direct",
)
FAST_PATHS = ("journal", "escrow", "redis")


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: what, measured value, limit, PASS/FAIL (n/a when not measured)."""
    out: list[dict[str, Any]] = []
    proxy = res.get("proxy", {})
    levels = proxy.get("levels", {})
    for name in WITH:
        for _label, lv in levels.items():
            if lv.get("stream") or name not in lv or "without" not in lv:
                continue
            ratio = lv[name]["rps"] / lv["without"]["rps"] if lv["without"]["rps"] else None
            out.append(
                {
                    "target": f"proxy req/s {name} / without, concurrency {lv['concurrency']}",
                    "value": round(ratio, 3) if ratio is not None else None,
                    # what the machine's swings between rounds alone could have made of it
                    "interval": lv[name].get("x_without_interval"),
                    "limit": f">= {PROXY_THROUGHPUT_MIN_RATIO}",
                    "pass": ratio is not None and ratio >= PROXY_THROUGHPUT_MIN_RATIO,
                }
            )
        c1 = levels.get("c1", {})
        if name in c1 and "without" in c1:
            delta = c1[name]["p50_ms"] - c1["without"]["p50_ms"]
            out.append(
                {
                    "target": f"added p50 latency at concurrency 1, {name} (ms)",
                    "value": round(delta, 2),
                    "limit": f"< {ADDED_P50_MAX_MS}",
                    "pass": delta < ADDED_P50_MAX_MS,
                }
            )
        mem = proxy.get("memory", {})
        if name in mem and "without" in mem:
            delta = mem[name]["after_load"]["rss_mb"] - mem["without"]["after_load"]["rss_mb"]
            out.append(
                {
                    "target": f"added RSS after load, {name} (MB)",
                    "value": round(delta, 1),
                    "limit": f"< {ADDED_MEMORY_MAX_MB:.0f}",
                    "pass": delta < ADDED_MEMORY_MAX_MB,
                }
            )
    pg = res.get("ledger", {}).get("throughput", {}).get("postgresql", {})
    hot_ratios = [("hot_vs_raw", ""), ("group_commit_hot_vs_raw", " (group commit)")]
    hot_ratios += [(f"{name}_hot_vs_raw", f" ({name})") for name in FAST_PATHS]
    for field, label in hot_ratios:
        for key, cell in pg.items():
            if not key.startswith("threads_") or field not in cell:
                continue
            out.append(
                {
                    "target": f"hot-account hold+settle / raw PG UPDATE+INSERT tx{label}, {key.replace('_', ' ')}",
                    "value": cell.get(field),
                    "limit": f">= {_hot_limit(field)}",
                    "pass": cell.get(field) is not None and cell[field] >= _hot_limit(field),
                }
            )
    return out


def _fsync_text(fsync: dict[str, float] | None, keys: tuple[str, ...] = ("p50", "p99", "mean")) -> str:
    return "n/a" if not fsync else " / ".join(str(fsync[k]) for k in keys)


def _fsync_ceiling_text(fsync: dict[str, float] | None, x: dict[str, Any], raw_per_s: float | None) -> str:
    """The most cycles/s at this many charges per fsync, the disk's mean fsync (timed in
    the same rounds) being the only cost: a journaled charge returns once its line is on
    disk."""
    per_fsync = x.get("charges_per_fsync")
    if not fsync or not per_fsync:
        return "n/a"
    ceiling = per_fsync * 1e6 / fsync["mean"]
    return f"{_fmt(ceiling, 0)} ({_fmt(ceiling / raw_per_s, 2)})" if raw_per_s else _fmt(ceiling, 0)


def _server_text(x: dict[str, Any]) -> str:
    cpu = x.get("pg_cpu_ms_per_request")
    return "" if cpu is None else f"{_fmt(cpu)} ({x.get('pg_checkpoints', 0)})"


def _ratio_text(ratio: float | None, interval: list[float | None] | None) -> str:
    if ratio is None:
        return ""
    if not interval or None in interval:
        return _fmt(ratio, 3)
    return f"{ratio:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _hot_limit(field: str) -> float:
    """The issue's bar: at least the raw rate; with Redis, three times it."""
    return HOT_VS_RAW_MIN_RATIO * (REDIS_FACTOR if field.startswith("redis") else 1)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return out


def _md(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _journal_row(proxy: str, counts: dict[str, int]) -> list[str]:
    charges, fsyncs = counts["charges"], counts["fsyncs"]
    per_charge = _fmt(fsyncs / charges, 3) if charges else ""
    return [proxy, str(charges), str(fsyncs), per_charge, str(counts["fsyncs_off_loop"])]


def disk_section(proxy: dict[str, Any]) -> tuple[str, list[str], list[list[str]]] | None:
    """The journal's disk as timed between the proxy rounds of each level (``proxy_bench.run``)."""
    disk = proxy.get("disk_fsync_us")
    if not disk:
        return None
    return (
        "The journal's disk between the proxy rounds: one line's fdatasync, µs "
        "(a call at concurrency 1 waits for one before its response)",
        ["level", "p50", "p99", "mean"],
        [[label, _fmt(d["p50"], 1), _fmt(d["p99"], 1), _fmt(d["mean"], 1)] for label, d in disk.items()],
    )


def sections(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows) of every table, shared by the terminal and markdown renderings."""
    out: list[tuple[str, list[str], list[list[str]]]] = []
    m = res["machine"]
    out.append(
        (
            "Machine",
            ["what", "value"],
            [
                ["cores (nproc)", str(m["nproc"])],
                ["CPU", m["cpu_model"]],
                ["memory", f"{m['memory_gib']} GiB"],
                ["kernel", m["kernel"]],
                ["python", m["python"]],
                ["litellm", m["litellm"]],
                ["SQLAlchemy / psycopg / SQLite", f"{m['sqlalchemy']} / {m['psycopg']} / {m['sqlite']}"],
                ["PostgreSQL", m["postgresql"]],
                ["PostgreSQL commit settings", m.get("postgresql_settings", "n/a")],
                [
                    "code measured",
                    f"{m['git_commit']}{' + uncommitted src changes' if m['src_uncommitted_changes'] else ''}",
                ],
                [
                    "others' CPU use at start / load avg",
                    f"{m['others_cpu_busy_pct_at_start']}% / {' '.join(m['loadavg_at_start'])}",
                ],
                ["journal line fsync µs (p50 / p99 / mean)", _fsync_text(m.get("journal_fsync_us"))],
                ["mode", res["mode"]],
            ],
        )
    )
    proxy = res.get("proxy")
    if proxy and proxy.get("levels"):
        rows = []
        for _label, lv in proxy["levels"].items():
            base = lv.get("without", {})
            for name in ("without", "with_sqlite", "with_sqlite_master_key", *WITH[1:]):
                if name not in lv:
                    continue
                x = lv[name]
                ratio = x["rps"] / base["rps"] if name != "without" and base.get("rps") else None
                dp50 = x["p50_ms"] - base["p50_ms"] if name != "without" and base else None
                rows.append(
                    [
                        f"{lv['concurrency']}{' stream' if lv['stream'] else ''}",
                        name,
                        _fmt(x["rps"], 1),
                        _fmt(x["p50_ms"]),
                        _fmt(x["p99_ms"]),
                        _ratio_text(ratio, x.get("x_without_interval")),
                        (f"{dp50:+.2f}" if dp50 is not None else ""),
                        _fmt(x.get("proxy_cpu_ms_per_request")),
                        _fmt(x.get("proxy_sys_ms_per_request")),
                        _fmt(x.get("proxy_loop_cpu_ms_per_request")),
                        _server_text(x),
                        str(x["requests"]),
                        str(x["errors"]),
                        " ".join(_fmt(v, 0) for v in x["rounds_rps"]),
                        " ".join(_fmt(v, 1) for v in x.get("processes_rps", [])),
                        f"{x.get('full_gcs', 0)} ({_fmt(x.get('full_gc_s', 0.0), 2)} s)",
                    ]
                )
        out.append(
            (
                "Proxy overhead (chat completion through LiteLLM to a local fake upstream)",
                [
                    "conc.",
                    "proxy",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "x without [90 % interval]",
                    "p50 delta",
                    "proxy CPU ms/req",
                    "of which kernel",
                    "of which loop thread",
                    "PostgreSQL server CPU ms/req (checkpoints)",
                    "requests",
                    "errors",
                    "req/s per round",
                    "req/s of each process",
                    "full GCs in rounds",
                ],
                rows,
            )
        )
        disk = disk_section(proxy)
        if disk:
            out.append(disk)
        mem_rows = []
        base = proxy["memory"].get("without", {}).get("after_load", {}).get("rss_mb")
        for name, mm in proxy["memory"].items():
            after = mm["after_load"]["rss_mb"]
            mem_rows.append(
                [
                    name,
                    _fmt(mm["after_warmup"]["rss_mb"], 1),
                    _fmt(after, 1),
                    (f"{after - base:+.1f}" if base is not None and name != "without" else ""),
                    str(mm["after_load"]["processes"]),
                ]
            )
        out.append(
            (
                "Proxy memory (VmRSS of the process tree, MB)",
                ["proxy", "after warm-up", "after load", "vs without", "processes"],
                mem_rows,
            )
        )
        chk = proxy.get("books_check", {})
        if chk:
            out.append(
                (
                    "Books after the proxy load (every served call charged once?)",
                    ["proxy", "200 responses", "usage events", "still held (µcr)", "audit"],
                    [
                        [
                            k,
                            str(v["ok_responses"]),
                            str(v["usage_events"]),
                            str(v["held_after"]),
                            "ok" if not v["audit_problems"] else "; ".join(v["audit_problems"]),
                        ]
                        for k, v in chk.items()
                    ],
                )
            )
        journal_rows = [_journal_row(k, v) for k, v in proxy.get("journal", {}).items()]
        if journal_rows:
            headers = ["proxy", "charges", "fsyncs", "fsyncs per charge", "of them off the event loop"]
            title = "Settle journal in the proxies, whole run (as each logged it when it stopped)"
            out.append((title, headers, journal_rows))
    led = res.get("ledger", {})
    if led.get("throughput"):
        rows = []
        for backend, cells in led["throughput"].items():
            for key, cell in cells.items():
                if not key.startswith("threads_"):
                    continue
                t = key.split("_")[1]
                rows.append(
                    [
                        backend,
                        t,
                        _fmt(cell["ledger_hot"]["per_s"], 1),
                        _fmt(cell["ledger_spread"]["per_s"], 1),
                        _fmt(cell["raw_hot"]["per_s"], 1),
                        _fmt(cell["hot_vs_raw"], 4),
                        _fmt(cell["ledger_hot"]["p50_ms"]),
                        _fmt(cell["ledger_hot"]["p99_ms"]),
                        _fmt(cell.get("ledger_hot_group_commit", {}).get("per_s"), 1),
                        _fmt(cell.get("group_commit_hot_vs_raw"), 4),
                        _fmt(cell.get("ledger_hot_group_commit", {}).get("p50_ms")),
                        _fmt(cell.get("group_commit_ops_per_batch"), 2),
                        str(
                            cell["ledger_hot"]["errors"]
                            + cell["ledger_spread"]["errors"]
                            + cell.get("ledger_hot_group_commit", {}).get("errors", 0)
                        ),
                    ]
                )
        out.append(
            (
                f"Ledger throughput (hold + settle cycles/s; raw = one UPDATE + one INSERT transaction; {led.get('accounts', '?')} accounts spread)",
                [
                    "database",
                    "threads",
                    "hot cycles/s",
                    "spread cycles/s",
                    "raw tx/s",
                    "hot / raw",
                    "hot p50 ms",
                    "hot p99 ms",
                    "group-commit hot cycles/s",
                    "group hot / raw",
                    "group hot p50 ms",
                    "ops per batch",
                    "errors",
                ],
                rows,
            )
        )
        fast_rows = []
        for backend, cells in led["throughput"].items():
            for key, cell in cells.items():
                if not key.startswith("threads_"):
                    continue
                for name in FAST_PATHS:
                    x = cell.get(f"ledger_hot_{name}")
                    if x is None:
                        continue
                    fast_rows.append(
                        [
                            backend,
                            key.split("_")[1],
                            name,
                            _fmt(x["per_s"], 1),
                            _fmt(cell["raw_hot"]["per_s"], 1),
                            _fmt(cell.get(f"{name}_hot_vs_raw"), 3),
                            _fmt(x["p50_ms"], 3),
                            _fmt(x["p99_ms"], 3),
                            _fmt(x.get("charges_per_batch"), 1),
                            _fmt(x.get("charges_per_fsync"), 1),
                            _fsync_ceiling_text(cell.get("journal_fsync_us"), x, cell["raw_hot"]["per_s"]),
                            _fsync_text(cell.get("journal_fsync_us"), ("p50", "mean")),
                            str(x["errors"]),
                        ]
                    )
        if fast_rows:
            out.append(
                (
                    "Hot account with the fast paths (async holds + settle journal; escrow: + in-process escrow; redis: + Redis escrow), "
                    "sustained (each round waits until the journal is applied)",
                    [
                        "database",
                        "threads",
                        "path",
                        "hot cycles/s",
                        "raw tx/s",
                        "hot / raw",
                        "p50 ms",
                        "p99 ms",
                        "charges per commit",
                        "charges per fsync",
                        "their fsyncs' ceiling/s (÷ raw)",
                        "fsync µs p50 / mean (same rounds)",
                        "errors",
                    ],
                    fast_rows,
                )
            )
    if led.get("apply"):
        out.append(
            (
                "Applying the settle journal's batches (charges lent from one escrow, batches of "
                f"{next(iter(led['apply'].values()))['batch']}): CPU per charge",
                ["database", "writer thread µs (rounds)", "PostgreSQL server µs", "the writer runs in"],
                [
                    [
                        backend,
                        f"{_fmt(a['writer_cpu_us_per_charge'], 1)} ({' '.join(_fmt(x, 1) for x in a['writer_rounds'])})",
                        _fmt(a["server_cpu_us_per_charge"], 1)
                        if a["server_cpu_us_per_charge"] is not None
                        else "-",
                        "the proxy's process (SQLite in-process)"
                        if backend == "sqlite"
                        else "the proxy's process; the server's work on the same machine",
                    ]
                    for backend, a in led["apply"].items()
                ],
            )
        )
    if led.get("statements"):
        rows = []
        for backend, ops in led["statements"].items():
            for op in ("hold", "settle", "balance"):
                if op not in ops:
                    continue
                o = ops[op]
                verbs = ", ".join(f"{k} {v}" for k, v in o["by_verb"].items())
                rows.append(
                    [
                        backend,
                        op,
                        str(o["statements"]),
                        str(o.get("round_trips", "")),
                        verbs,
                        _fmt(o["p50_ms"], 3),
                    ]
                )
        out.append(
            (
                "Statements per ledger call (one hot account, one thread)",
                ["database", "call", "SQL statements", "PG round trips", "by verb", "p50 ms"],
                rows,
            )
        )
    alone = res.get("plugin_alone")
    if alone and alone.get("variants"):
        out.append(
            (
                f"The plugin alone: one call's hooks driven in-process at concurrency {alone['concurrency']}, "
                f"no proxy (harness {_fmt(alone['harness_cpu_us_per_call'], 1)} µs per call, subtracted)",
                [
                    "variant",
                    "plugin CPU µs/call",
                    "per round, harness included",
                    "usage events / calls",
                    "audit",
                ],
                [
                    [
                        name,
                        _fmt(v["plugin_cpu_us_per_call"], 1),
                        " ".join(_fmt(c, 0) for c in v["cpu_us_per_call_rounds"]),
                        f"{v['usage_events']} / {v['calls_total']}",
                        "ok" if v["audit_ok"] else "FAILED",
                    ]
                    for name, v in alone["variants"].items()
                ],
            )
        )
    tg = res.get("targets", [])
    if tg:
        out.append(
            (
                "Targets",
                ["target", "measured", "target", "result"],
                [
                    [
                        t["target"],
                        _ratio_text(t["value"], t["interval"]) if "interval" in t else _fmt(t["value"], 3),
                        t["limit"],
                        "PASS" if t["pass"] else "FAIL",
                    ]
                    for t in tg
                ],
            )
        )
    return out


def render_text(res: dict[str, Any]) -> str:
    lines: list[str] = []
    for title, headers, rows in sections(res):
        lines += ["", f"== {title}", *_table(headers, rows)]
    return "\n".join(lines) + "\n"


def render_markdown(res: dict[str, Any]) -> str:
    lines = [f"# litellm-credits benchmark results ({res['mode']}, {res['finished_at']})", ""]
    for title, headers, rows in sections(res):
        lines += [f"## {title}", "", *_md(headers, rows), ""]
    prof = res.get("ledger", {}).get("profile", {})
    for backend, p in prof.items():
        lines += [
            f"## Where a hold + settle cycle spends its time ({backend}, cProfile, one thread)",
            "",
            f"{p['cycles']} cycles, {p['ms_per_cycle_profiled']} ms per cycle under the profiler.",
            "",
            *_md(["layer", "share of time"], [[k, f"{v}%"] for k, v in p["share_by_layer"].items()]),
            "",
        ]
    per = res.get("ledger", {}).get("statements", {})
    for backend, ops in per.items():
        pc = ops.get("per_cycle")
        if pc:
            lines += [
                f"## Time inside SQL statements vs around them ({backend}, hold + settle + balance)",
                "",
                f"{pc['hold_settle_balance_ms']} ms per hold+settle+balance, of which "
                f"{pc['in_statement_execution_ms']} ms inside cursor.execute and "
                f"{pc['outside_statements_ms']} ms outside (ORM, BEGIN/COMMIT, pool pre-ping, Python).",
                "",
                *_md(
                    ["statement", "ms per cycle"], [[k, _fmt(v, 3)] for k, v in pc["statements_ms"].items()]
                ),
                "",
            ]
    return "\n".join(lines)
