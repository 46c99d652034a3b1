"""Which markup applies to a call: rule selection by specificity, then fallbacks.

The most specific matching rule wins, compared as the tuple
(model score, tier score, provider score): a model named exactly scores 2, a
glob 1, no model 0; a tier or provider present scores 1. Specificity is
compared before ``priority`` so that adding a broad rule can never steal
calls from a narrow one by accident; ``priority`` only orders equally
specific rules, and after it the earlier rule in the file wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from pricing.catalog import PASSTHROUGH, Catalog, Markup, MarkupRule
from pricing.patterns import model_score

Specificity = tuple[int, int, int]


@dataclass(frozen=True)
class ResolvedMarkup:
    """The markup for a call and where it came from."""

    markup: Markup
    rule_id: str
    """The rule's id, ``tier:<code>:default`` or ``passthrough``."""
    origin: str
    """For explanations: ``rule <id>``, ``tier <code> default`` or ``passthrough (no rule)``."""


def specificity(rule: MarkupRule, *, tier: str, model: str, provider: str | None) -> Specificity | None:
    """How specifically ``rule`` matches the call, or ``None`` when it does not."""
    if not rule.active:
        return None
    model_points = model_score(rule.model, model)
    if model_points is None:
        return None
    if rule.tier is not None and rule.tier != tier:
        return None
    if rule.provider is not None and rule.provider != provider:
        return None
    return (model_points, int(rule.tier is not None), int(rule.provider is not None))


def select_rule(catalog: Catalog, *, tier: str, model: str, provider: str | None) -> MarkupRule | None:
    """The winning rule for a call, or ``None`` when no rule matches."""
    best: MarkupRule | None = None
    best_key: tuple[Specificity, int, int] | None = None
    for position, rule in enumerate(catalog.rules):
        score = specificity(rule, tier=tier, model=model, provider=provider)
        if score is None:
            continue
        key = (score, rule.priority, -position)
        if best_key is None or key > best_key:
            best, best_key = rule, key
    return best


def resolve_markup(catalog: Catalog, *, tier: str, model: str, provider: str | None) -> ResolvedMarkup:
    """The markup for a call: the winning rule, else the tier's default, else passthrough.

    Raises ``UnknownTier`` when ``tier`` is not in the catalog, even if a rule
    without a tier would match: an account on a missing tier is a setup error.
    """
    tier_entry = catalog.tier(tier)
    rule = select_rule(catalog, tier=tier, model=model, provider=provider)
    if rule is not None:
        return ResolvedMarkup(rule.markup, rule.id, f"rule {rule.id}")
    if tier_entry.default_markup is not None:
        return ResolvedMarkup(tier_entry.default_markup, f"tier:{tier}:default", f"tier {tier} default")
    return ResolvedMarkup(PASSTHROUGH, "passthrough", "passthrough (no rule)")
