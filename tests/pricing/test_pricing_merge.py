"""The catalog from YAML merged with database rows (pure: rows are given as dicts)."""

import textwrap
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from pricing import CatalogError, CatalogRows, merge_catalog, parse_catalog, price

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
D = Decimal

BASE = textwrap.dedent(
    """\
    tiers:
      - code: free
        allowed_models: ["demo-*"]
        denied_models: ["demo-premium"]
        monthly_credits: "100"
      - code: pro
        allowed_models: ["*"]
        default_markup: {kind: multiplier, value: "1.2"}
    rules:
      - id: gpt4o-min
        model: "gpt-4o*"
        kind: multiplier
        value: "1.5"
        min_charge_usd: "0.01"
      - id: demo-fast-2x
        model: demo-fast
        kind: multiplier
        value: "2"
    """
)
STAMP = {"updated_at": datetime(2025, 5, 1, tzinfo=UTC), "updated_by": "admin@example.com"}


def merged(**rows: list[dict[str, Any]]) -> Any:
    return merge_catalog(BASE, CatalogRows(**rows), "pricing.yaml")


def row_error(**rows: list[dict[str, Any]]) -> CatalogError:
    with pytest.raises(CatalogError) as caught:
        merged(**rows)
    assert caught.value.file == "database" and caught.value.line is None
    return caught.value


# -- the rules ---------------------------------------------------------------------------


def test_no_rows_is_the_yaml_catalog_with_the_same_version() -> None:
    assert merged() == parse_catalog(BASE, "pricing.yaml")


def test_a_tier_row_replaces_only_the_fields_it_sets() -> None:
    catalog = merged(
        tiers=[{"code": "free", "monthly_credits": "250", "max_tokens_per_request": None, **STAMP}]
    )
    free = catalog.tier("free")
    assert free.monthly_credits == D(250)
    assert free.allowed_models == ("demo-*",) and free.denied_models == ("demo-premium",)  # kept
    assert free.max_tokens_per_request is None  # a null column is an unset field


def test_a_tier_row_with_a_new_code_adds_a_tier() -> None:
    catalog = merged(tiers=[{"code": "team", "name": "Team", "allowed_models": ["*"], "seats": 5, **STAMP}])
    assert list(catalog.tiers) == ["free", "pro", "team"]
    assert catalog.tier("team").seats == 5


def test_tier_fields_may_come_as_json_in_a_data_column() -> None:
    catalog = merged(tiers=[{"code": "pro", "name": "Pro", "data": '{"byok_allowed": true}', **STAMP}])
    assert catalog.tier("pro").byok_allowed is True
    assert catalog.tier("pro").name == "Pro"


def test_access_rows_replace_a_tiers_lists_entirely() -> None:
    catalog = merged(
        tier_model_access=[
            {
                "id": 1,
                "tier_code": "free",
                "pattern": "demo-embed",
                "effect": "allow",
                "position": 2,
                **STAMP,
            },
            {"id": 2, "tier_code": "free", "pattern": "group:cheap", "effect": "allow", "position": 1},
        ]
    )
    free = catalog.tier("free")
    assert free.allowed_models == ("group:cheap", "demo-embed")  # by position
    assert free.denied_models == ()  # no deny rows: the YAML's deny list is gone too
    assert catalog.tier("pro").allowed_models == ("*",)  # other tiers untouched


def test_access_rows_can_give_a_new_tier_its_models() -> None:
    catalog = merged(
        tiers=[{"code": "team"}],
        tier_model_access=[
            {"tier_code": "team", "pattern": "*", "effect": "allow"},
            {"tier_code": "team", "pattern": "demo-premium", "effect": "deny"},
        ],
    )
    team = catalog.tier("team")
    assert (team.allows("gpt-4o"), team.allows("demo-premium")) == (True, False)


def test_a_rule_row_replaces_the_yaml_rule_in_its_place_and_new_ids_are_added() -> None:
    catalog = merged(
        pricing_rules=[
            {"id": "new-rule", "provider": "anthropic", "kind": "percentage", "value": "10", **STAMP},
            {
                "id": "gpt4o-min",
                "model": "gpt-4o*",
                "kind": "multiplier",
                "value": "3",
                "fee_usd": None,
                **STAMP,
            },
        ]
    )
    assert [rule.id for rule in catalog.rules] == ["gpt4o-min", "demo-fast-2x", "new-rule"]
    replaced = catalog.rules[0]
    assert replaced.markup.value == D(3)
    assert replaced.markup.min_charge_usd is None  # replaced whole, not merged
    priced = price(
        catalog,
        tier="pro",
        model="gpt-4o",
        provider="openai",
        cost_usd=D("0.01"),
        input_tokens=1,
        output_tokens=1,
    )
    assert priced.charged_usd == D("0.03")


def test_an_inactive_rule_row_switches_a_yaml_rule_off() -> None:
    catalog = merged(
        pricing_rules=[{"id": "demo-fast-2x", "model": "demo-fast", "kind": "passthrough", "active": False}]
    )
    priced = price(
        catalog,
        tier="pro",
        model="demo-fast",
        provider="openai",
        cost_usd=D("0.01"),
        input_tokens=1,
        output_tokens=1,
    )
    assert priced.rule_id == "tier:pro:default"


def test_the_base_may_be_a_parsed_mapping() -> None:
    data = yaml.safe_load(BASE)
    catalog = merge_catalog(
        data, CatalogRows(tiers=[{"code": "free", "monthly_credits": "5"}]), "pricing.yaml"
    )
    assert catalog.tier("free").monthly_credits == D(5)


def test_rows_may_fix_what_the_yaml_alone_lacks() -> None:
    # A YAML rule for a tier that exists only in the database.
    text = BASE + "  - {id: team-rule, tier: team, kind: passthrough}\n"
    with pytest.raises(CatalogError):
        parse_catalog(text)
    catalog = merge_catalog(text, CatalogRows(tiers=[{"code": "team", "allowed_models": ["*"]}]))
    assert catalog.rules[-1].tier == "team"


# -- the version ------------------------------------------------------------------------


def test_version_changes_with_the_text_and_with_any_row() -> None:
    rows = CatalogRows(pricing_rules=[{"id": "r", "kind": "passthrough", **STAMP}])
    base = merge_catalog(BASE, rows).version
    assert merge_catalog(BASE, rows).version == base  # deterministic
    assert merge_catalog(BASE + "# edited\n", rows).version != base
    changed_rule = CatalogRows(pricing_rules=[{"id": "r", "kind": "passthrough", "priority": 1, **STAMP}])
    assert merge_catalog(BASE, changed_rule).version != base
    touched = CatalogRows(
        pricing_rules=[
            {"id": "r", "kind": "passthrough", **STAMP, "updated_at": datetime(2025, 6, 1, tzinfo=UTC)}
        ]
    )
    assert merge_catalog(BASE, touched).version != base
    access = CatalogRows(
        pricing_rules=rows.pricing_rules,
        tier_model_access=[{"tier_code": "pro", "pattern": "*", "effect": "allow"}],
    )
    assert merge_catalog(BASE, access).version != base
    assert merge_catalog(BASE, CatalogRows()).version == parse_catalog(BASE).version


# -- errors name the row -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "location", "reason"),
    [
        (
            {"pricing_rules": [{"id": "gpt4o-min", "model": "gpt-4o*", "kind": "multiplyer", "value": "2"}]},
            "pricing_rules[id=gpt4o-min].kind",
            "unknown markup kind 'multiplyer'",
        ),
        (
            {"pricing_rules": [{"id": "cheap", "kind": "multiplier", "value": "-1"}]},
            "pricing_rules[id=cheap].value",
            "multiplier must be > 0",
        ),
        (
            {"pricing_rules": [{"id": "cheap", "kind": "multiplier", "value": "2", "min_charge": "1"}]},
            "pricing_rules[id=cheap].min_charge",
            "did you mean 'min_charge_usd'",
        ),
        (
            {"pricing_rules": [{"id": "gold-rule", "tier": "gold", "kind": "passthrough"}]},
            "pricing_rules[id=gold-rule].tier",
            "unknown tier 'gold'",
        ),
        ({"pricing_rules": [{"kind": "passthrough"}]}, "pricing_rules[0].id", "missing required key 'id'"),
        (
            {"pricing_rules": [{"id": "a", "kind": "passthrough"}, {"id": "a", "kind": "passthrough"}]},
            "pricing_rules[id=a].id",
            "two rows",
        ),
        (
            {"tiers": [{"code": "pro", "monthly_credits": "lots"}]},
            "tiers[code=pro].monthly_credits",
            "expected a number",
        ),
        ({"tiers": [{"code": "team"}]}, "tiers[code=team].allowed_models", "missing required key"),
        ({"tiers": [{"name": "No code"}]}, "tiers[0].code", "missing required key 'code'"),
        (
            {"tiers": [{"code": "pro", "rollover": {"max_fraction": "2"}}]},
            "tiers[code=pro].rollover",
            "at most 1",
        ),
        (
            {"tier_model_access": [{"tier_code": "free", "pattern": "x", "effect": "permit"}]},
            "tier_model_access[0].effect",
            "'allow' or 'deny'",
        ),
        (
            {"tier_model_access": [{"tier_code": "gold", "pattern": "x", "effect": "allow"}]},
            "tier_model_access[0].tier_code",
            "unknown tier 'gold'",
        ),
        (
            {
                "tier_model_access": [
                    {"tier_code": "free", "pattern": "demo-*", "effect": "allow"},
                    {"tier_code": "free", "pattern": "group:", "effect": "allow"},
                ]
            },
            "tier_model_access[1].pattern",
            "needs a name",
        ),
        (
            {"tier_model_access": [{"tier_code": "free", "effect": "allow"}]},
            "tier_model_access[0].pattern",
            "missing required key 'pattern'",
        ),
        ({"pricing_rules": ["not a row"]}, "pricing_rules[0]", "must be a mapping"),
        ({"tiers": [{"code": "pro", "data": "{nope"}]}, "tiers[0].data", "is not JSON"),
    ],
)
def test_invalid_rows_are_named(rows: dict[str, list[Any]], location: str, reason: str) -> None:
    error = row_error(**rows)
    assert error.location == location
    assert reason in error.reason
    assert str(error).startswith(f"database: {location}: ")


def test_yaml_problems_keep_their_file_and_line() -> None:
    text = BASE.replace('value: "2"', 'value: "-2"')
    with pytest.raises(CatalogError) as caught:
        merge_catalog(
            text, CatalogRows(pricing_rules=[{"id": "extra", "kind": "passthrough"}]), "pricing.yaml"
        )
    error = caught.value
    assert (error.file, error.location, error.line) == ("pricing.yaml", "rules[1].value", 18)


def test_a_yaml_field_of_a_tier_a_row_touched_still_points_at_the_yaml() -> None:
    text = BASE.replace('monthly_credits: "100"', 'monthly_credits: "-1"')
    with pytest.raises(CatalogError) as caught:
        merge_catalog(text, CatalogRows(tiers=[{"code": "free", "seats": 2}]), "pricing.yaml")
    assert (caught.value.file, caught.value.location, caught.value.line) == (
        "pricing.yaml",
        "tiers[0].monthly_credits",
        5,
    )


def test_the_example_catalog_merges() -> None:
    text = (EXAMPLES / "pricing.yaml").read_text()
    catalog = merge_catalog(text, CatalogRows(tiers=[{"code": "free", "monthly_credits": "200"}]))
    assert catalog.tier("free").monthly_credits == D(200)
    assert catalog.tier("free").quotas[0].per_day == 100
