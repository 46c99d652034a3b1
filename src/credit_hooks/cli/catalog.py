"""The admin-editable catalog: every edit is validated against the YAML before it is stored."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pricing import CatalogRows

from .common import (
    By,
    as_rows,
    current_catalog,
    json_object,
    open_ledger,
    out,
    validated,
)

catalog_app = typer.Typer(no_args_is_help=True, help="The pricing catalog: YAML + database rows.")


@catalog_app.command("show")
def catalog_show() -> None:
    """The catalog in force: version, tiers, rules, and where each comes from."""
    ledger = open_ledger()
    snapshot = ledger.catalog_rows()
    catalog = current_catalog(ledger)
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
    data = json_object(fields, "FIELDS")
    ledger = open_ledger()
    current = as_rows(ledger.catalog_rows())
    row = {"id": rule_id, "data": data, "priority": priority, "active": not inactive}
    rules = [r for r in current.pricing_rules if r["id"] != rule_id] + [row]
    catalog = validated(CatalogRows(current.tiers, current.tier_model_access, rules))
    ledger.upsert_pricing_rule_row(rule_id, data=data, priority=priority, active=not inactive, updated_by=by)
    out.print(f"rule {rule_id} stored; catalog version {catalog.version}")


@catalog_app.command("delete-rule")
def catalog_delete_rule(rule_id: str, by: By = "cli") -> None:
    """Remove a database rule (a rule of the YAML file is switched off with set-rule --inactive)."""
    ledger = open_ledger()
    current = as_rows(ledger.catalog_rows())
    rules = [r for r in current.pricing_rules if r["id"] != rule_id]
    validated(CatalogRows(current.tiers, current.tier_model_access, rules))
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
    data = json_object(fields, "FIELDS")
    ledger = open_ledger()
    current = as_rows(ledger.catalog_rows())
    row = {"code": code, "name": name, "data": data}
    tiers = [t for t in current.tiers if t["code"] != code] + [row]
    validated(CatalogRows(tiers, current.tier_model_access, current.pricing_rules))
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
    ledger = open_ledger()
    current = as_rows(ledger.catalog_rows())
    access = [r for r in current.tier_model_access if r["tier_code"] != tier] + [
        {"tier_code": tier, "position": i, "pattern": p, "effect": e} for i, (p, e) in enumerate(pairs)
    ]
    validated(CatalogRows(current.tiers, access, current.pricing_rules))
    ledger.set_model_access_rows(tier, pairs, updated_by=by)
    out.print(f"tier {tier}: {len(pairs)} access rows")
