import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from pricing import Catalog, CatalogError, Markup, MarkupRule, Tier, UnknownTier, load_catalog, parse_catalog

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def parse(text: str) -> Catalog:
    return parse_catalog(textwrap.dedent(text), "test.yaml")


def error_of(text: str) -> CatalogError:
    with pytest.raises(CatalogError) as caught:
        parse(text)
    return caught.value


# -- the shipped example ------------------------------------------------------


def test_example_catalog_loads() -> None:
    catalog = load_catalog(EXAMPLES / "pricing.yaml")
    assert catalog.source.endswith("pricing.yaml")
    assert catalog.usd_per_credit == Decimal("0.001")
    assert list(catalog.tiers) == ["free", "pro", "enterprise"]
    free, pro, enterprise = catalog.tiers.values()
    assert free.allowed_models == ("demo-*",) and free.denied_models == ("demo-premium",)
    assert pro.allowed_models == ("*",)
    assert pro.default_markup == Markup(kind="multiplier", value=Decimal("1.2"))
    assert enterprise.allowed_models == ("*",)
    assert enterprise.default_markup is not None and enterprise.default_markup.kind == "passthrough"
    rules = {rule.id: rule for rule in catalog.rules}
    assert rules["demo-fast-2x"].model == "demo-fast" and rules["demo-fast-2x"].tier is None
    assert rules["demo-fast-2x"].markup == Markup(kind="multiplier", value=Decimal("2.0"))
    assert rules["gpt4o-min"].model == "gpt-4o*"
    assert rules["gpt4o-min"].markup.min_charge_usd == Decimal("0.01")
    assert rules["anthropic-10pct"].provider == "anthropic"
    assert rules["anthropic-10pct"].markup == Markup(kind="percentage", value=Decimal("10"))
    assert rules["embeddings-fee"].markup == Markup(kind="fixed", fee_usd=Decimal("0.0001"))
    text = (EXAMPLES / "pricing.yaml").read_text()
    for demo_model in ("demo-fast", "demo-premium", "demo-embed"):
        assert demo_model in text


def test_version_is_a_sha256_prefix_of_the_text() -> None:
    import hashlib

    text = (EXAMPLES / "pricing.yaml").read_text()
    catalog = parse_catalog(text)
    assert catalog.version == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert parse_catalog(text + "\n# changed\n").version != catalog.version
    assert catalog.source == "<string>"


# -- numbers ----------------------------------------------------------------------


def test_yaml_floats_are_read_exactly_from_their_text() -> None:
    catalog = parse(
        """
        usd_per_credit: 0.1
        tiers: [{code: t, allowed_models: ["*"], default_markup: {kind: multiplier, value: 1.10}}]
        rules:
          - {id: a, kind: fixed, fee_usd: 0.0000001}
          - {id: b, kind: percentage, value: 33.333333333333333333333}
          - {id: c, kind: multiplier, value: "0.3", min_charge_usd: 1_000.5}
        """
    )
    assert catalog.usd_per_credit == Decimal("0.1")
    assert str(catalog.usd_per_credit) == "0.1"
    default = catalog.tiers["t"].default_markup
    assert default is not None and str(default.value) == "1.10"
    assert catalog.rules[0].markup.fee_usd == Decimal("0.0000001")
    assert catalog.rules[1].markup.value == Decimal("33.333333333333333333333")
    assert catalog.rules[2].markup.min_charge_usd == Decimal("1000.5")


def test_defaults_and_empty_sections() -> None:
    catalog = parse(
        """
        tiers:
          - code: free
            allowed_models: []
        rules:
        models:
        """
    )
    assert catalog.usd_per_credit == Decimal("0.001")
    assert catalog.rules == ()
    assert catalog.models == {}
    assert catalog.tiers["free"].name == "free"
    assert not catalog.tiers["free"].allows("anything")


def test_models_section_parses() -> None:
    catalog = parse(
        """
        tiers: []
        models:
          demo-gpt: {input_per_1m: "2.50", output_per_1m: 10, max_output_tokens: 4096}
          capped-only: {max_output_tokens: 100}
        """
    )
    assert catalog.models["demo-gpt"].input_per_1m == Decimal("2.50")
    assert catalog.models["demo-gpt"].output_per_1m == Decimal("10")
    assert catalog.models["capped-only"].input_per_1m is None


# -- bad catalogs -------------------------------------------------------------------

BAD = [
    ("unknown_kind.yaml", "rules[0].kind", 9, "unknown markup kind 'markup'"),
    ("negative_multiplier.yaml", "rules[1].value", 15, "multiplier must be > 0"),
    ("duplicate_tier.yaml", "tiers[2].code", 11, "duplicate tier code 'pro'"),
    ("unknown_tier_rule.yaml", "rules[0].tier", 8, "unknown tier 'premium'"),
    ("duplicate_rule.yaml", "rules[1].id", 11, "duplicate rule id 'markup'"),
    ("missing_override_price.yaml", "rules[0].output_per_1m", 8, "required for kind 'override'"),
    ("percentage_floor.yaml", "tiers[0].default_markup.value", 7, "percentage must be > -100"),
    ("unknown_key.yaml", "rules[0].min_charge", 10, "did you mean 'min_charge_usd'"),
    ("negative_fee.yaml", "rules[0].fee_usd", 10, "must not be negative"),
    ("zero_usd_per_credit.yaml", "usd_per_credit", 3, "must be > 0"),
    ("yaml_syntax.yaml", "yaml", 5, "expected ',' or ']'"),
    ("duplicate_key.yaml", "rules[0].value", 11, "duplicate key 'value' (first at line 10)"),
    ("unquoted_time.yaml", "time_windows[0].start", 9, 'write the time in quotes, e.g. "22:00"'),
    ("unknown_timezone.yaml", "time_windows[0].timezone", 11, "unknown time zone 'CET+1'"),
    ("byok_tier_not_allowed.yaml", "byok_rules[0].tiers[0]", 12, "does not set byok_allowed: true"),
    ("quota_without_limit.yaml", "tiers[0].quotas[1]", 7, "set per_day and/or per_month"),
]


@pytest.mark.parametrize(("name", "location", "line", "reason"), BAD, ids=[case[0] for case in BAD])
def test_bad_catalog_is_reported_precisely(name: str, location: str, line: int, reason: str) -> None:
    path = EXAMPLES / "bad" / name
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    error = caught.value
    assert error.file == str(path)
    assert error.location == location
    assert error.line == line
    assert reason in error.reason
    message = str(error)
    assert str(path) in message
    assert f"{path}:{line}:" in message
    assert location in message
    assert reason in message


def test_every_bad_example_is_tested() -> None:
    assert {case[0] for case in BAD} == {path.name for path in (EXAMPLES / "bad").glob("*.yaml")}


@pytest.mark.parametrize(
    ("kind_fields", "location", "reason"),
    [
        ("kind: multiplier", "rules[0].value", "required for kind 'multiplier'"),
        ("kind: percentage", "rules[0].value", "required for kind 'percentage'"),
        ("kind: fixed", "rules[0].fee_usd", "required for kind 'fixed'"),
        ("kind: override\n    output_per_1m: 1", "rules[0].input_per_1m", "required for kind 'override'"),
        ("kind: multiplier\n    value: 0", "rules[0].value", "must be > 0"),
        ("kind: percentage\n    value: -100.5", "rules[0].value", "must be > -100"),
        ("kind: passthrough\n    value: 2", "rules[0].value", "not used by kind 'passthrough'"),
        ("kind: multiplier\n    value: 2\n    input_per_1m: 1", "rules[0].input_per_1m", "only used by kind"),
        ("kind: multiplier\n    value: abc", "rules[0].value", "expected a number, got 'abc'"),
        ("kind: multiplier\n    value: .inf", "rules[0].value", "expected a number"),
        ("kind: multiplier\n    value: yes", "rules[0].value", "expected a number, got true"),
        ("kind: passthrough\n    min_charge_usd: -1", "rules[0].min_charge_usd", "must not be negative"),
        ("kind: override\n    input_per_1m: -1\n    output_per_1m: 1", "rules[0].input_per_1m", "negative"),
        ("kind: passthrough\n    priority: high", "rules[0].priority", "valid integer"),
        ("value: 2", "rules[0].kind", "missing required key 'kind'"),
    ],
)
def test_rule_field_errors(kind_fields: str, location: str, reason: str) -> None:
    text = "tiers: []\nrules:\n  - id: r\n    " + kind_fields + "\n"
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, "x.yaml")
    assert caught.value.location == location
    assert reason in caught.value.reason
    assert caught.value.line is not None and 3 <= caught.value.line <= text.count("\n")


def test_missing_key_points_at_the_entry_that_lacks_it() -> None:
    error = error_of(
        """
        tiers:
          - code: free
            allowed_models: []
          - name: Nameless
            allowed_models: []
        """
    )
    assert (error.location, error.line) == ("tiers[1].code", 5)
    assert "missing required key 'code'" in error.reason


def test_unknown_top_level_key() -> None:
    error = error_of(
        """
        tiers: []
        rule:
          - id: x
        """
    )
    assert (error.location, error.line) == ("rule", 3)
    assert "did you mean 'rules'" in error.reason


def test_unknown_tier_key_lists_what_is_allowed() -> None:
    error = error_of(
        """
        tiers:
          - code: free
            allowed_models: []
            colour: blue
        """
    )
    assert error.location == "tiers[0].colour"
    assert "allowed here: code, name, allowed_models" in error.reason


def test_a_misspelt_new_tier_key_gets_a_suggestion() -> None:
    error = error_of(
        """
        tiers:
          - code: free
            allowed_models: []
            quota: 5
        """
    )
    assert error.location == "tiers[0].quota"
    assert "did you mean 'quotas'" in error.reason


def test_model_entry_errors_name_the_model() -> None:
    error = error_of(
        """
        tiers: []
        models:
          gpt-3.5-turbo: {input_per_1m: 1}
        """
    )
    assert error.location == 'models["gpt-3.5-turbo"]'
    assert error.line == 4
    assert "set both input_per_1m and output_per_1m" in error.reason


def test_the_earliest_problem_is_reported() -> None:
    error = error_of(
        """
        rules:
          - {id: a, kind: nope}
        tiers:
          - {code: free}
        """
    )
    assert error.location == "rules[0].kind"
    assert error.line == 3


def test_tier_code_rules() -> None:
    error = error_of(
        """
        tiers:
          - {code: "pro:yearly", allowed_models: []}
        """
    )
    assert error.location == "tiers[0].code"
    assert "':'" in error.reason


@pytest.mark.parametrize(
    ("text", "location", "reason"),
    [
        ("", "document", "empty"),
        ("# only a comment\n", "document", "empty"),
        ("- a\n- b\n", "document", "must be a mapping"),
        ("tiers: [1, 2]\n", "tiers[0]", "valid dictionary"),
        ("tiers: {}\n", "tiers", "valid list"),
        ("tiers:\n  - code: a\n    allowed_models: '*'\n", "tiers[0].allowed_models", "valid tuple"),
        ("tiers: []\nx: !!python/object:os.system {}\n", "yaml", "could not determine a constructor"),
    ],
)
def test_malformed_documents(text: str, location: str, reason: str) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, "x.yaml")
    assert caught.value.location == location
    assert reason in caught.value.reason


def test_unreadable_file_is_a_catalog_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(CatalogError) as caught:
        load_catalog(missing)
    assert str(missing) in str(caught.value)


# -- the models in Python -------------------------------------------------------------


def test_catalog_is_frozen() -> None:
    catalog = load_catalog(EXAMPLES / "pricing.yaml")
    with pytest.raises(ValidationError):
        catalog.usd_per_credit = Decimal(1)  # type: ignore[misc]
    with pytest.raises(ValidationError):
        catalog.rules[0].priority = 5  # type: ignore[misc]


def test_catalog_built_in_python_is_validated_too() -> None:
    tier = Tier(code="free", allowed_models=("*",))
    rule = MarkupRule(id="r", tier="gold", markup=Markup(kind="passthrough"))
    with pytest.raises(ValidationError, match="unknown tier 'gold'"):
        Catalog(tiers={"free": tier}, rules=(rule,))
    with pytest.raises(ValidationError, match="duplicate rule id"):
        Catalog(tiers={"free": tier}, rules=(rule.model_copy(update={"tier": None}),) * 2)


def test_python_floats_go_through_str() -> None:
    markup = Markup(kind="multiplier", value=0.1)  # type: ignore[arg-type]
    assert markup.value == Decimal("0.1")


def test_unknown_tier_lookup() -> None:
    catalog = load_catalog(EXAMPLES / "pricing.yaml")
    assert catalog.tier("pro").code == "pro"
    with pytest.raises(UnknownTier) as caught:
        catalog.tier("gold")
    assert caught.value.tier == "gold"
    assert "free, pro, enterprise" in str(caught.value)
