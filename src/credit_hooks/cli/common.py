"""What every command shares: settings, the ledger, account references, credit amounts, the catalog."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from rich.console import Console

from ledger import Account, CatalogRowsSnapshot, Ledger
from pricing import Catalog, CatalogRows, credits_to_micro, merge_catalog
from pricing.errors import AccountNotFound, SettingsError

from ..settings import IDENTITY_KINDS, CreditSettings, load_settings

# a 64-bit column of micro-credits holds 9.2e12 credits: one operation stays far below that
MAX_CREDITS = Decimal(10**12)

out = Console()
err = Console(stderr=True)


def read_settings() -> CreditSettings:
    return load_settings()


def open_ledger() -> Ledger:
    from ledger.migrate import current, has_ledger_tables, head

    url = read_settings().database_url
    version = current(url)
    # an unversioned database with the tables was made by Ledger.create_schema, at head
    if version != head() and not (version is None and has_ledger_tables(url)):
        raise SettingsError(
            "CREDITS_DATABASE_URL",
            f"{Ledger(url).url} has no up-to-date credits schema; run `credits-admin db init` first",
        )
    return Ledger(url)


def find_account(ledger: Ledger, ref: str) -> Account:
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


def parse_credits(text: str, field: str) -> int:
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


def current_catalog(ledger: Ledger) -> Catalog:
    return validated(as_rows(ledger.catalog_rows()))


def as_rows(snapshot: CatalogRowsSnapshot) -> CatalogRows:
    return CatalogRows(
        tiers=list(snapshot.tiers),
        tier_model_access=list(snapshot.tier_model_access),
        pricing_rules=list(snapshot.pricing_rules),
    )


def json_object(text: str, field: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{field}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{field}: expected a JSON object")
    return value


def validated(rows: CatalogRows) -> Catalog:
    """The catalog the edit would make; refused (nothing stored) when it does not validate."""
    settings = read_settings()
    return merge_catalog(
        settings.pricing_file.read_text(encoding="utf-8"), rows, source=str(settings.pricing_file)
    )


By = Annotated[str, typer.Option("--by", help="who makes the change (recorded as updated_by)")]
