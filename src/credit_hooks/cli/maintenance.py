"""The schema and the periodic work: `db init`, `periods run` (cron-safe)."""

from __future__ import annotations

import typer

from ledger import Ledger
from ledger import micro_to_credit_str as credits_text

from ..periods import run_periods_exclusive
from .common import (
    current_catalog,
    open_ledger,
    out,
    read_settings,
)

db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
periods_app = typer.Typer(no_args_is_help=True, help="Billing periods: allocations, rollover.")


@db_app.command("init")
def db_init() -> None:
    """Create or upgrade the schema to the latest migration."""
    from ledger.migrate import upgrade

    url = read_settings().database_url
    upgrade(url)
    out.print(f"schema up to date: {Ledger(url).url}")


@periods_app.command("run")
def periods_run() -> None:
    """Start every account's due billing period once (safe to run from cron next to the proxies)."""
    ledger = open_ledger()
    result = run_periods_exclusive(ledger, current_catalog(ledger))
    if result is None:
        out.print("another process is running the billing periods; nothing done")
        return
    out.print(
        f"{result.accounts} accounts: {result.allocated} periods started, "
        f"{credits_text(result.rolled_over_micro)} credits rolled over, "
        f"{result.tier_changes} tier changes, {result.grants_expired} grants expired"
    )
