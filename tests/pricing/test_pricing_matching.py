import textwrap
from pathlib import Path

import pytest

from pricing import (
    Catalog,
    ModelNotAllowed,
    UnknownTier,
    check_access,
    load_catalog,
    parse_catalog,
    resolve_markup,
    select_rule,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Rules chosen so that every level of the precedence is decided somewhere below.
PRECEDENCE = parse_catalog(
    textwrap.dedent(
        """
        tiers:
          - {code: free, allowed_models: ["*"]}
          - {code: pro, allowed_models: ["*"], default_markup: {kind: multiplier, value: "1.2"}}
          - {code: plain, allowed_models: ["*"]}
        rules:
          - {id: catch-all, kind: multiplier, value: "1.1"}
          - {id: pro-any, tier: pro, kind: multiplier, value: "1.3"}
          - {id: openai-any, provider: openai, kind: multiplier, value: "1.4"}
          - {id: pro-openai, tier: pro, provider: openai, kind: multiplier, value: "1.5"}
          - {id: gpt-glob, model: "gpt-*", kind: multiplier, value: "1.6"}
          - {id: gpt-glob-pro, model: "gpt-*", tier: pro, kind: multiplier, value: "1.7"}
          - {id: gpt4o-exact, model: gpt-4o, kind: multiplier, value: "1.8"}
          - {id: gpt4o-exact-low, model: gpt-4o, kind: multiplier, value: "1.9", priority: -1}
          - {id: mini-first, model: gpt-4o-mini, kind: multiplier, value: "2"}
          - {id: mini-second, model: gpt-4o-mini, kind: multiplier, value: "2.1"}
          - {id: claude-low, model: "claude-*", kind: multiplier, value: "2.2"}
          - {id: claude-high, model: "claude-*", kind: multiplier, value: "2.3", priority: 10}
          - {id: claude-tier-glob-question, model: "claude-?", tier: free, kind: multiplier, value: "2.4"}
        """
    ),
    "precedence.yaml",
)


@pytest.mark.parametrize(
    ("tier", "model", "provider", "winner", "why"),
    [
        ("free", "llama", None, "catch-all", "only the selector-less rule matches"),
        ("pro", "llama", None, "pro-any", "a tier beats nothing"),
        ("free", "llama", "openai", "openai-any", "a provider beats nothing"),
        ("pro", "llama", "openai", "pro-openai", "tier + provider beats tier alone"),
        ("pro", "gpt-3.5", "openai", "gpt-glob-pro", "glob beats tier+provider; glob+tier beats glob"),
        ("free", "gpt-3.5", "openai", "gpt-glob", "a glob model beats provider"),
        ("pro", "gpt-4o", "openai", "gpt4o-exact", "an exact model beats a glob with a tier"),
        ("free", "gpt-4o-mini", None, "mini-first", "equal specificity and priority: earlier rule"),
        ("free", "claude-opus", None, "claude-high", "equal specificity: higher priority"),
        ("free", "claude-3", None, "claude-tier-glob-question", "glob + tier beats a higher-priority glob"),
        ("pro", "claude-3", None, "claude-high", "no free-tier rule for pro"),
        ("free", "GPT-4O", None, "catch-all", "matching is case-sensitive"),
    ],
)
def test_rule_precedence(tier: str, model: str, provider: str | None, winner: str, why: str) -> None:
    rule = select_rule(PRECEDENCE, tier=tier, model=model, provider=provider)
    assert rule is not None
    assert rule.id == winner, why


def test_specificity_beats_priority() -> None:
    catalog = parse_catalog(
        textwrap.dedent(
            """
            tiers: [{code: t, allowed_models: ["*"]}]
            rules:
              - {id: broad, model: "*", kind: passthrough, priority: 1000}
              - {id: exact, model: m, kind: passthrough}
            """
        )
    )
    rule = select_rule(catalog, tier="t", model="m", provider=None)
    assert rule is not None and rule.id == "exact"


def test_priority_beats_file_order() -> None:
    catalog = parse_catalog(
        textwrap.dedent(
            """
            tiers: [{code: t, allowed_models: ["*"]}]
            rules:
              - {id: first, model: m, kind: passthrough, priority: 1}
              - {id: second, model: m, kind: passthrough, priority: 2}
              - {id: third, model: m, kind: passthrough, priority: 2}
            """
        )
    )
    rule = select_rule(catalog, tier="t", model="m", provider=None)
    assert rule is not None and rule.id == "second"


def test_rules_for_another_tier_or_provider_do_not_match() -> None:
    catalog = parse_catalog(
        textwrap.dedent(
            """
            tiers: [{code: a, allowed_models: ["*"]}, {code: b, allowed_models: ["*"]}]
            rules:
              - {id: only-a, tier: a, kind: passthrough}
              - {id: only-openai, provider: openai, kind: passthrough}
            """
        )
    )
    assert select_rule(catalog, tier="b", model="m", provider="anthropic") is None
    assert select_rule(catalog, tier="b", model="m", provider=None) is None


@pytest.mark.parametrize(
    ("tier", "model", "rule_id"),
    [
        ("pro", "demo-fast", "demo-fast-2x"),
        ("free", "demo-fast", "demo-fast-2x"),
        ("pro", "demo-premium", "tier:pro:default"),
        ("free", "demo-embed", "passthrough"),
        ("enterprise", "demo-premium", "tier:enterprise:default"),
        ("enterprise", "gpt-4o-mini", "gpt4o-min"),
    ],
)
def test_fallbacks_in_the_example(tier: str, model: str, rule_id: str) -> None:
    catalog = load_catalog(EXAMPLES / "pricing.yaml")
    assert resolve_markup(catalog, tier=tier, model=model, provider="openai").rule_id == rule_id


def test_resolve_markup_requires_a_known_tier() -> None:
    with pytest.raises(UnknownTier):
        resolve_markup(PRECEDENCE, tier="gold", model="llama", provider=None)


# -- access ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> Catalog:
    return load_catalog(EXAMPLES / "pricing.yaml")


@pytest.mark.parametrize(
    ("tier", "model", "allowed"),
    [
        ("free", "demo-fast", True),
        ("free", "demo-embed", True),
        ("free", "demo-premium", False),  # deny wins over allow
        ("free", "gpt-4o", False),
        ("free", "xdemo-fast", False),
        ("pro", "demo-premium", True),
        ("pro", "anything/at-all", True),
        ("enterprise", "gpt-4o", True),
    ],
)
def test_tier_access(example: Catalog, tier: str, model: str, allowed: bool) -> None:
    assert example.tier(tier).allows(model) is allowed
    if allowed:
        check_access(example, tier, model)
    else:
        with pytest.raises(ModelNotAllowed) as caught:
            check_access(example, tier, model)
        assert (caught.value.tier, caught.value.model) == (tier, model)
        assert caught.value.code == "model_not_allowed"


def test_access_patterns() -> None:
    catalog = parse_catalog(
        textwrap.dedent(
            """
            tiers:
              - {code: none, allowed_models: []}
              - {code: exact, allowed_models: [gpt-4o-mini]}
              - {code: mixed, allowed_models: ["gpt-4o*", "claude-3-[hs]*"], denied_models: ["*-preview"]}
            """
        )
    )
    assert not catalog.tier("none").allows("gpt-4o")
    assert catalog.tier("exact").allows("gpt-4o-mini")
    assert not catalog.tier("exact").allows("gpt-4o")
    mixed = catalog.tier("mixed")
    assert mixed.allows("gpt-4o") and mixed.allows("gpt-4o-mini")
    assert not mixed.allows("gpt-4o-preview")
    assert mixed.allows("claude-3-haiku") and mixed.allows("claude-3-sonnet")
    assert not mixed.allows("claude-3-opus")


def test_check_access_on_unknown_tier() -> None:
    with pytest.raises(UnknownTier):
        check_access(PRECEDENCE, "gold", "gpt-4o")
