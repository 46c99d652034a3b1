"""Credits: grants, usage, and the audit of the books."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ledger import micro_to_credit_str as credits_text

from .common import (
    err,
    find_account,
    open_ledger,
    out,
    parse_credits,
)


def grant(
    ref: str,
    credits: str,
    source: Annotated[str, typer.Option(help="purchase, bonus, subscription, ...")] = "bonus",
    external_ref: Annotated[str | None, typer.Option("--ref", help="idempotency reference")] = None,
    expires_days: Annotated[int | None, typer.Option(min=1, help="expire after this many days")] = None,
    priority: Annotated[int, typer.Option(help="higher burns first")] = 0,
    reason: str = "",
) -> None:
    """Grant credits to an account."""
    micro = parse_credits(credits, "CREDITS")
    ledger = open_ledger()
    account = find_account(ledger, ref)
    expires_at = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    g = ledger.grant(
        account.id,
        micro,
        source=source,
        external_ref=external_ref,
        priority=priority,
        expires_at=expires_at,
        reason=reason,
    )
    out.print(f"grant {g.id}: {credits_text(g.amount)} credits to {account.label}")
    out.print(f"available: {credits_text(ledger.balance(account.id).available)} credits")


def usage(ref: str, limit: Annotated[int, typer.Option(min=1, max=1000)] = 20) -> None:
    """Recent usage events of an account, newest first."""
    ledger = open_ledger()
    account = find_account(ledger, ref)
    table = Table(title=f"usage of {account.label}")
    for column in ("time", "model", "call", "in", "out", "provider $", "credits", "rule"):
        table.add_column(column)
    for e in ledger.usage(account.id, limit):
        table.add_row(
            e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            e.model,
            e.call_type,
            str(e.tokens_in),
            str(e.tokens_out),
            str(e.provider_cost_usd.normalize()),
            credits_text(e.charged),
            e.markup_rule or "",
        )
    out.print(table)


def audit() -> None:
    """Prove the ledger invariants; exit 1 when any is broken."""
    problems = open_ledger().audit()
    for problem in problems:
        err.print(f"[red]{escape(problem)}[/red]")
    if problems:
        raise typer.Exit(1)
    out.print("ledger consistent: entries sum to balances, holds resolved at most once")
