"""May a tier use a model."""

from __future__ import annotations

from pricing.catalog import Catalog
from pricing.errors import ModelNotAllowed


def check_access(catalog: Catalog, tier_code: str, model: str) -> None:
    """Raise ``ModelNotAllowed`` unless the tier allows the model (``UnknownTier`` for a missing tier)."""
    if not catalog.tier(tier_code).allows(model):
        raise ModelNotAllowed(tier_code, model)
