"""Accounts and their keys: create, show, tier changes, status, BYOK, key issue (with seats)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from ledger import micro_to_credit_str as credits_text
from pricing import period_bounds

from ..periods import prorated_upgrade_micro
from ..settings import IDENTITY_KINDS
from .common import (
    current_catalog,
    err,
    find_account,
    open_ledger,
    out,
    parse_credits,
    read_settings,
)

account_app = typer.Typer(no_args_is_help=True, help="Billing accounts.")
key_app = typer.Typer(no_args_is_help=True, help="API keys for custom_auth.")


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
    catalog = current_catalog(open_ledger())
    if tier not in catalog.tiers:
        raise typer.BadParameter(
            f"--tier: {tier!r} is not in the catalog (tiers: {', '.join(catalog.tiers)})"
        )
    overdraft_micro = 0 if overdraft == "0" else parse_credits(overdraft, "--overdraft")
    ledger = open_ledger()
    account = ledger.open_account(kind, external_id, tier=tier, overdraft_limit=overdraft_micro)
    out.print(f"account {account.id} {account.label} on tier {account.tier}")


@account_app.command("show")
def account_show(ref: str) -> None:
    """Balance of an account."""
    ledger = open_ledger()
    account = find_account(ledger, ref)
    b = ledger.balance(account.id)
    table = Table(title=f"{account.label} (id {account.id}, tier {account.tier}, {account.status})")
    for column in ("balance", "held", "available", "overdraft limit"):
        table.add_column(column, justify="right")
    table.add_row(*(credits_text(v) for v in (b.balance, b.held, b.available, b.overdraft_limit)))
    out.print(table)
    escrowed = ledger.escrowed(account.id)
    if escrowed:
        # the proxies lend calls from these without a hold each; what they have not lent
        # is the account's to spend, and comes back when an escrow is replaced or expires
        out.print(f"of the held credit, {credits_text(escrowed)} is in escrows the proxies lend calls from")


@account_app.command("tier")
def account_tier(
    ref: str,
    new_tier: str,
    when: Annotated[
        str | None, typer.Option(help="immediate or period_end (default: CREDITS_TIER_CHANGE)")
    ] = None,
) -> None:
    """Move an account to another tier, now (an upgrade's allocation prorated) or at period end."""
    settings = read_settings()
    timing = when or settings.tier_change.value
    if timing not in ("immediate", "period_end"):
        raise typer.BadParameter(f"--when: expected immediate or period_end, got {timing!r}")
    ledger = open_ledger()
    account = find_account(ledger, ref)
    catalog = current_catalog(ledger)
    if new_tier not in catalog.tiers:
        raise typer.BadParameter(
            f"NEW_TIER: {new_tier!r} is not in the catalog (tiers: {', '.join(catalog.tiers)})"
        )
    now = datetime.now(UTC)
    period = period_bounds(account.period_anchor or account.created_at, now)
    if timing == "period_end":
        ledger.schedule_tier_change(account.id, new_tier, period[1])
        out.print(f"{account.label}: {account.tier} -> {new_tier} at {period[1].isoformat()}")
        return
    extra = prorated_upgrade_micro(catalog.tier(account.tier), catalog.tier(new_tier), period, now)
    ledger.change_tier(
        account.id,
        new_tier,
        prorated_micro=extra,
        reference=f"tier:{account.id}:{new_tier}:{period[0].isoformat()}",
        reason=f"{account.tier} -> {new_tier}",
    )
    out.print(
        f"{account.label}: {account.tier} -> {new_tier} now; prorated allocation {credits_text(extra)} credits"
    )


@account_app.command("status")
def account_status(ref: str, status: str) -> None:
    """Set active, suspended, past_due or closed (inactive accounts get 402 account_inactive)."""
    ledger = open_ledger()
    account = ledger.set_status(find_account(ledger, ref).id, status)
    out.print(f"{account.label} is {account.status}")


@account_app.command("byok")
def account_byok(ref: str, mode: Annotated[str, typer.Argument(help="on or off")]) -> None:
    """BYOK mode: calls use the user's own provider key and pay only the BYOK fee."""
    if mode not in ("on", "off"):
        raise typer.BadParameter(f"MODE: expected on or off, got {mode!r}")
    ledger = open_ledger()
    account = ledger.set_byok(find_account(ledger, ref).id, mode == "on")
    out.print(f"{account.label}: BYOK {'on' if account.byok else 'off'}")


@key_app.command("issue")
def key_issue(
    ref: str,
    alias: Annotated[str | None, typer.Option(help="a name to recognise the key by")] = None,
    user_id: Annotated[str | None, typer.Option(help="user id the key carries")] = None,
    team_id: Annotated[str | None, typer.Option(help="team id the key carries")] = None,
) -> None:
    """Issue an API key bound to an account; it is shown once. A team's keys are limited to its tier's seats."""
    ledger = open_ledger()
    account = find_account(ledger, ref)
    seats = current_catalog(ledger).tier(account.tier).seats
    if account.kind == "team" and seats is not None:
        members = {k.user_id for k in ledger.list_keys(account.id) if k.revoked_at is None}
        if user_id not in members and len(members) >= seats:
            raise typer.BadParameter(
                f"{account.label} uses all {seats} seats of tier {account.tier}; "
                "revoke a member's keys or move the team to a larger tier"
            )
    issued = ledger.issue_key(account.id, user_id=user_id, team_id=team_id, alias=alias)
    out.print(issued.plaintext, soft_wrap=True)
    err.print(f"key {issued.key.key_prefix}… bound to {account.label}; it is not shown again")
