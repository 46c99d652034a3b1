"""Fault-injection fixtures: a private PostgreSQL server, and the malformed-input tally."""

from __future__ import annotations

from .private_pg import PrivatePostgres, private_pg  # noqa: F401  (fixture)

# how many malformed inputs the entry-point tests tried, by entry point
MALFORMED_CASES: dict[str, int] = {}


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    if MALFORMED_CASES:
        total = sum(MALFORMED_CASES.values())
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(MALFORMED_CASES.items()))
        terminalreporter.write_line(f"malformed inputs tried: {total} ({parts})")
