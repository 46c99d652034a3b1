"""May a tier use a model."""

from __future__ import annotations

from pricing.catalog import Catalog
from pricing.errors import ModelNotAllowed
from pricing.patterns import NO_GROUPS


def check_access(catalog: Catalog, tier_code: str, model: str, *, groups: frozenset[str] = NO_GROUPS) -> None:
    """Raise ``ModelNotAllowed`` unless the tier allows the model (``UnknownTier`` for a missing tier).

    ``groups`` are the LiteLLM access groups ``model`` belongs to; the caller
    knows them from the proxy's model list, and ``group:NAME`` entries of the
    tier's allowed and denied lists match against them.
    """
    if not catalog.tier(tier_code).allows(model, groups):
        raise ModelNotAllowed(tier_code, model)
