"""``credits-admin``: the operator's command line.

Reads the same ``CREDITS_*`` settings as the proxy plugin, so it works on the
same database. Accounts are named ``KIND:EXTERNAL_ID`` (``user:alice``,
``team:acme``) or by their numeric id.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ledger import Account, Ledger
from ledger import micro_to_credit_str as credits_text
from pricing import credits_to_micro
from pricing.errors import AccountNotFound, CreditsError

from .settings import IDENTITY_KINDS, CreditSettings, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Administer litellm-credits.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
account_app = typer.Typer(no_args_is_help=True, help="Billing accounts.")
key_app = typer.Typer(no_args_is_help=True, help="API keys for custom_auth.")
app.add_typer(db_app, name="db")
app.add_typer(account_app, name="account")
app.add_typer(key_app, name="key")

out = Console()
err = Console(stderr=True)


def _settings() -> CreditSettings:
    return load_settings()


def _ledger() -> Ledger:
    return Ledger(_settings().database_url)


def _account(ledger: Ledger, ref: str) -> Account:
    if ref.isdigit():
        return ledger.get_account(int(ref))
    kind, sep, external_id = ref.partition(":")
    if not sep or kind not in IDENTITY_KINDS or not external_id:
        raise typer.BadParameter(
            f"expected KIND:ID with KIND one of {', '.join(IDENTITY_KINDS)}, got {ref!r}"
        )
    found = ledger.find_account(kind, external_id)
    if found is None:
        raise AccountNotFound(ref)
    return found


def _credits(text: str, field: str) -> int:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise typer.BadParameter(f"{field}: {text!r} is not a number of credits") from None
    if not value.is_finite() or value <= 0:
        raise typer.BadParameter(f"{field}: must be a positive number of credits, got {text}")
    try:
        return credits_to_micro(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{field}: {exc}") from None


@db_app.command("init")
def db_init() -> None:
    """Create or upgrade the schema to the latest migration."""
    from ledger.migrate import upgrade

    url = _settings().database_url
    upgrade(url)
    out.print(f"schema up to date: {Ledger(url).url}")


@account_app.command("create")
def account_create(
    ref: Annotated[str, typer.Argument(help="KIND:EXTERNAL_ID, e.g. user:alice")],
    tier: Annotated[str, typer.Option(help="tier code from the pricing catalog")] = "free",
    overdraft: Annotated[str, typer.Option(help="credits the account may go below zero")] = "0",
) -> None:
    """Open an account (or show the existing one)."""
    kind, _, external_id = ref.partition(":")
    if kind not in IDENTITY_KINDS or not external_id:
        raise typer.BadParameter(
            f"expected KIND:ID with KIND one of {', '.join(IDENTITY_KINDS)}, got {ref!r}"
        )
    from pricing import load_catalog

    catalog = load_catalog(_settings().pricing_file)
    if tier not in catalog.tiers:
        raise typer.BadParameter(
            f"--tier: {tier!r} is not in the catalog (tiers: {', '.join(catalog.tiers)})"
        )
    overdraft_micro = 0 if overdraft == "0" else _credits(overdraft, "--overdraft")
    ledger = _ledger()
    account = ledger.open_account(kind, external_id, tier=tier, overdraft_limit=overdraft_micro)
    out.print(f"account {account.id} {account.label} on tier {account.tier}")


@account_app.command("show")
def account_show(ref: str) -> None:
    """Balance of an account."""
    ledger = _ledger()
    account = _account(ledger, ref)
    b = ledger.balance(account.id)
    table = Table(title=f"{account.label} (id {account.id}, tier {account.tier}, {account.status})")
    for column in ("balance", "held", "available", "overdraft limit"):
        table.add_column(column, justify="right")
    table.add_row(*(credits_text(v) for v in (b.balance, b.held, b.available, b.overdraft_limit)))
    out.print(table)


@key_app.command("issue")
def key_issue(
    ref: str,
    alias: Annotated[str | None, typer.Option(help="a name to recognise the key by")] = None,
    user_id: Annotated[str | None, typer.Option(help="user id the key carries")] = None,
    team_id: Annotated[str | None, typer.Option(help="team id the key carries")] = None,
) -> None:
    """Issue an API key bound to an account; it is shown once."""
    ledger = _ledger()
    account = _account(ledger, ref)
    issued = ledger.issue_key(account.id, user_id=user_id, team_id=team_id, alias=alias)
    out.print(issued.plaintext, soft_wrap=True)
    err.print(f"key {issued.key.key_prefix}… bound to {account.label}; it is not shown again")


@app.command("grant")
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
    micro = _credits(credits, "CREDITS")
    ledger = _ledger()
    account = _account(ledger, ref)
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


@app.command("usage")
def usage(ref: str, limit: Annotated[int, typer.Option(min=1, max=1000)] = 20) -> None:
    """Recent usage events of an account, newest first."""
    ledger = _ledger()
    account = _account(ledger, ref)
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


@app.command("audit")
def audit() -> None:
    """Prove the ledger invariants; exit 1 when any is broken."""
    problems = _ledger().audit()
    for problem in problems:
        err.print(f"[red]{problem}[/red]")
    if problems:
        raise typer.Exit(1)
    out.print("ledger consistent: entries sum to balances, holds resolved at most once")


def main() -> None:
    try:
        app()
    except CreditsError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
