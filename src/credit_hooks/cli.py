"""``credits-admin``: the operator's command line.

Reads the same ``CREDITS_*`` settings as the proxy plugin, so it works on the
same database. Accounts are named ``KIND:EXTERNAL_ID`` (``user:alice``,
``team:acme``) or by their numeric id.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ledger import Account, CatalogRowsSnapshot, Ledger
from ledger import micro_to_credit_str as credits_text
from pricing import Catalog, CatalogRows, credits_to_micro, merge_catalog, period_bounds
from pricing.errors import AccountNotFound, CreditsError, SettingsError

from .periods import prorated_upgrade_micro, run_periods_exclusive
from .settings import IDENTITY_KINDS, CreditSettings, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Administer litellm-credits.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
account_app = typer.Typer(no_args_is_help=True, help="Billing accounts.")
key_app = typer.Typer(no_args_is_help=True, help="API keys for custom_auth.")
periods_app = typer.Typer(no_args_is_help=True, help="Billing periods: allocations, rollover.")
catalog_app = typer.Typer(no_args_is_help=True, help="The pricing catalog: YAML + database rows.")
app.add_typer(db_app, name="db")
app.add_typer(account_app, name="account")
app.add_typer(key_app, name="key")
app.add_typer(periods_app, name="periods")
app.add_typer(catalog_app, name="catalog")

# a 64-bit column of micro-credits holds 9.2e12 credits: one operation stays far below that
MAX_CREDITS = Decimal(10**12)

out = Console()
err = Console(stderr=True)


def _settings() -> CreditSettings:
    return load_settings()


def _ledger() -> Ledger:
    from ledger.migrate import current, has_ledger_tables, head

    url = _settings().database_url
    version = current(url)
    # an unversioned database with the tables was made by Ledger.create_schema, at head
    if version != head() and not (version is None and has_ledger_tables(url)):
        raise SettingsError(
            "CREDITS_DATABASE_URL",
            f"{Ledger(url).url} has no up-to-date credits schema; run `credits-admin db init` first",
        )
    return Ledger(url)


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
    if value > MAX_CREDITS:
        raise typer.BadParameter(f"{field}: at most {MAX_CREDITS:,} credits at once, got {text}")
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
    catalog = _catalog(_ledger())
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
    """Issue an API key bound to an account; it is shown once. A team's keys are limited to its tier's seats."""
    ledger = _ledger()
    account = _account(ledger, ref)
    seats = _catalog(ledger).tier(account.tier).seats
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
        err.print(f"[red]{escape(problem)}[/red]")
    if problems:
        raise typer.Exit(1)
    out.print("ledger consistent: entries sum to balances, holds resolved at most once")


@account_app.command("tier")
def account_tier(
    ref: str,
    new_tier: str,
    when: Annotated[
        str | None, typer.Option(help="immediate or period_end (default: CREDITS_TIER_CHANGE)")
    ] = None,
) -> None:
    """Move an account to another tier, now (an upgrade's allocation prorated) or at period end."""
    settings = _settings()
    timing = when or settings.tier_change.value
    if timing not in ("immediate", "period_end"):
        raise typer.BadParameter(f"--when: expected immediate or period_end, got {timing!r}")
    ledger = _ledger()
    account = _account(ledger, ref)
    catalog = _catalog(ledger)
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
    ledger = _ledger()
    account = ledger.set_status(_account(ledger, ref).id, status)
    out.print(f"{account.label} is {account.status}")


@account_app.command("byok")
def account_byok(ref: str, mode: Annotated[str, typer.Argument(help="on or off")]) -> None:
    """BYOK mode: calls use the user's own provider key and pay only the BYOK fee."""
    if mode not in ("on", "off"):
        raise typer.BadParameter(f"MODE: expected on or off, got {mode!r}")
    ledger = _ledger()
    account = ledger.set_byok(_account(ledger, ref).id, mode == "on")
    out.print(f"{account.label}: BYOK {'on' if account.byok else 'off'}")


@periods_app.command("run")
def periods_run() -> None:
    """Start every account's due billing period once (safe to run from cron next to the proxies)."""
    ledger = _ledger()
    result = run_periods_exclusive(ledger, _catalog(ledger))
    if result is None:
        out.print("another process is running the billing periods; nothing done")
        return
    out.print(
        f"{result.accounts} accounts: {result.allocated} periods started, "
        f"{credits_text(result.rolled_over_micro)} credits rolled over, "
        f"{result.tier_changes} tier changes, {result.grants_expired} grants expired"
    )


def _catalog(ledger: Ledger) -> Catalog:
    return _validate(_as_rows(ledger.catalog_rows()))


def _as_rows(snapshot: CatalogRowsSnapshot) -> CatalogRows:
    return CatalogRows(
        tiers=list(snapshot.tiers),
        tier_model_access=list(snapshot.tier_model_access),
        pricing_rules=list(snapshot.pricing_rules),
    )


def _json(text: str, field: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{field}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{field}: expected a JSON object")
    return value


def _validate(rows: CatalogRows) -> Catalog:
    """The catalog the edit would make; refused (nothing stored) when it does not validate."""
    settings = _settings()
    return merge_catalog(
        settings.pricing_file.read_text(encoding="utf-8"), rows, source=str(settings.pricing_file)
    )


By = Annotated[str, typer.Option("--by", help="who makes the change (recorded as updated_by)")]


@catalog_app.command("show")
def catalog_show() -> None:
    """The catalog in force: version, tiers, rules, and where each comes from."""
    ledger = _ledger()
    snapshot = ledger.catalog_rows()
    catalog = _catalog(ledger)
    db_rules = {row["id"] for row in snapshot.pricing_rules}
    out.print(f"catalog version {catalog.version} (1 credit = ${catalog.usd_per_credit})")
    table = Table(title="tiers")
    for column in ("code", "name", "monthly credits", "allowed", "denied"):
        table.add_column(column)
    for tier in catalog.tiers.values():
        table.add_row(
            tier.code,
            tier.name,
            str(tier.monthly_credits or ""),
            ", ".join(tier.allowed_models),
            ", ".join(tier.denied_models),
        )
    out.print(table)
    rules = Table(title="markup rules")
    for column in ("id", "match", "kind", "priority", "from"):
        rules.add_column(column)
    for rule in catalog.rules:
        match = " ".join(
            f"{k}={v}"
            for k, v in (("tier", rule.tier), ("model", rule.model), ("provider", rule.provider))
            if v
        )
        rules.add_row(
            rule.id,
            match or "*",
            rule.kind,
            str(rule.priority),
            "database" if rule.id in db_rules else "yaml",
        )
    out.print(rules)


@catalog_app.command("set-rule")
def catalog_set_rule(
    rule_id: str,
    fields: Annotated[
        str,
        typer.Argument(
            help='the rule as JSON, e.g. {"model": "demo-fast", "kind": "multiplier", "value": "3"}'
        ),
    ],
    priority: int = 0,
    inactive: Annotated[bool, typer.Option("--inactive", help="store it switched off")] = False,
    by: By = "cli",
) -> None:
    """Add or replace a markup rule in the database (validated first: a bad rule stores nothing)."""
    data = _json(fields, "FIELDS")
    ledger = _ledger()
    current = _as_rows(ledger.catalog_rows())
    row = {"id": rule_id, "data": data, "priority": priority, "active": not inactive}
    rules = [r for r in current.pricing_rules if r["id"] != rule_id] + [row]
    catalog = _validate(CatalogRows(current.tiers, current.tier_model_access, rules))
    ledger.upsert_pricing_rule_row(rule_id, data=data, priority=priority, active=not inactive, updated_by=by)
    out.print(f"rule {rule_id} stored; catalog version {catalog.version}")


@catalog_app.command("delete-rule")
def catalog_delete_rule(rule_id: str, by: By = "cli") -> None:
    """Remove a database rule (a rule of the YAML file is switched off with set-rule --inactive)."""
    ledger = _ledger()
    current = _as_rows(ledger.catalog_rows())
    rules = [r for r in current.pricing_rules if r["id"] != rule_id]
    _validate(CatalogRows(current.tiers, current.tier_model_access, rules))
    if not ledger.delete_pricing_rule_row(rule_id, updated_by=by):
        raise typer.BadParameter(f"RULE_ID: no database rule {rule_id!r}")
    out.print(f"rule {rule_id} deleted")


@catalog_app.command("set-tier")
def catalog_set_tier(
    code: str,
    fields: Annotated[str, typer.Argument(help='tier fields as JSON, e.g. {"monthly_credits": "500"}')],
    name: Annotated[str | None, typer.Option(help="display name")] = None,
    by: By = "cli",
) -> None:
    """Add a tier or override fields of one (validated first)."""
    data = _json(fields, "FIELDS")
    ledger = _ledger()
    current = _as_rows(ledger.catalog_rows())
    row = {"code": code, "name": name, "data": data}
    tiers = [t for t in current.tiers if t["code"] != code] + [row]
    _validate(CatalogRows(tiers, current.tier_model_access, current.pricing_rules))
    ledger.upsert_tier_row(code, name=name or code, data=data, updated_by=by)
    out.print(f"tier {code} stored")


@catalog_app.command("set-access")
def catalog_set_access(
    tier: str,
    allow: Annotated[list[str] | None, typer.Option(help="model name or glob (repeatable)")] = None,
    deny: Annotated[list[str] | None, typer.Option(help="model name or glob (repeatable)")] = None,
    by: By = "cli",
) -> None:
    """Replace a tier's model access with these allow/deny patterns (validated first)."""
    pairs = [(p, "allow") for p in allow or []] + [(p, "deny") for p in deny or []]
    ledger = _ledger()
    current = _as_rows(ledger.catalog_rows())
    access = [r for r in current.tier_model_access if r["tier_code"] != tier] + [
        {"tier_code": tier, "position": i, "pattern": p, "effect": e} for i, (p, e) in enumerate(pairs)
    ]
    _validate(CatalogRows(current.tiers, access, current.pricing_rules))
    ledger.set_model_access_rows(tier, pairs, updated_by=by)
    out.print(f"tier {tier}: {len(pairs)} access rows")


def main() -> None:
    try:
        app()
    except CreditsError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
