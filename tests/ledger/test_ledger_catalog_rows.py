"""Catalog rows: stored as given, read back in order, with a stamp that moves on every write."""

from __future__ import annotations

from decimal import Decimal

import pytest
from ledger_testlib import sqlite_only
from sqlalchemy import create_engine, text

from ledger import Ledger
from pricing.errors import InvalidOperation


def test_rows_round_trip_and_the_stamp_moves(ledger: Ledger) -> None:
    empty = ledger.catalog_rows()
    assert (empty.tiers, empty.tier_model_access, empty.pricing_rules) == ([], [], [])
    assert ledger.catalog_stamp() == empty.stamp

    ledger.upsert_tier_row(
        "pro", name="Pro", data={"monthly_credits": 100, "markup": Decimal("1.5")}, updated_by="ann"
    )
    ledger.set_model_access_rows(
        "pro", [("gpt-4o*", "allow"), {"pattern": "o1*", "effect": "deny"}], updated_by="ann"
    )
    ledger.upsert_pricing_rule_row(
        "r1", data={"model": "gpt-4o", "kind": "multiplier"}, priority=5, updated_by="bob"
    )
    snap = ledger.catalog_rows()
    (tier,) = snap.tiers
    assert (tier["code"], tier["name"], tier["data"], tier["updated_by"]) == (
        "pro",
        "Pro",
        {"markup": "1.5", "monthly_credits": 100},
        "ann",
    )
    assert [(r["tier_code"], r["pattern"], r["effect"]) for r in snap.tier_model_access] == [
        ("pro", "gpt-4o*", "allow"),
        ("pro", "o1*", "deny"),
    ]
    (rule,) = snap.pricing_rules
    assert (rule["id"], rule["priority"], rule["active"], rule["data"]["kind"]) == (
        "r1",
        5,
        True,
        "multiplier",
    )
    assert snap.stamp not in (empty.stamp,)

    stamps = {empty.stamp, snap.stamp}
    ledger.upsert_pricing_rule_row("r1", data={"model": "gpt-4o"}, priority=1, active=False, updated_by="bob")
    stamps.add(ledger.catalog_stamp())
    ledger.set_model_access_rows("pro", [("*", "allow")], updated_by="ann")
    stamps.add(ledger.catalog_stamp())
    assert ledger.delete_pricing_rule_row("r1", updated_by="bob") is True
    stamps.add(ledger.catalog_stamp())
    assert ledger.delete_pricing_rule_row("r1", updated_by="bob") is False
    assert len(stamps) == 5
    after = ledger.catalog_rows()
    assert after.stamp == ledger.catalog_stamp()
    assert after.pricing_rules == []
    assert [r["pattern"] for r in after.tier_model_access] == ["*"]

    assert ledger.delete_tier_row("pro", updated_by="ann") is True
    final = ledger.catalog_rows()
    assert (final.tiers, final.tier_model_access) == ([], [])


def test_a_hand_edit_moves_the_stamp_too(ledger: Ledger, db_url: str) -> None:
    ledger.upsert_tier_row("free", name="Free", data={}, updated_by="ann")
    ledger.upsert_tier_row("pro", name="Pro", data={}, updated_by="ann")
    before = ledger.catalog_stamp()
    engine = create_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM tiers WHERE code = 'pro'"))
    engine.dispose()
    assert ledger.catalog_stamp() != before


@sqlite_only
def test_bad_catalog_rows_are_refused(ledger: Ledger) -> None:
    with pytest.raises(InvalidOperation):
        ledger.set_model_access_rows("nope", [("*", "allow")], updated_by="ann")
    ledger.upsert_tier_row("pro", name="Pro", data={}, updated_by="ann")
    with pytest.raises(InvalidOperation):
        ledger.set_model_access_rows("pro", [("*", "maybe")], updated_by="ann")
    with pytest.raises(InvalidOperation):
        ledger.upsert_tier_row("pro", name="Pro", data={"when": object()}, updated_by="ann")
    with pytest.raises(InvalidOperation):
        ledger.upsert_pricing_rule_row("", data={}, updated_by="ann")
    assert ledger.catalog_rows().tier_model_access == []
