"""pricing: the catalog (tiers, model access, markup rules) and pure pricing functions.

Imports only the standard library, pydantic and PyYAML; touches no database
and knows nothing of LiteLLM. Money is ``Decimal`` USD in, integer
micro-credits out, rounded up once (see :mod:`pricing.money`).
"""

from pricing.access import check_access
from pricing.catalog import MARKUP_KINDS, Catalog, Markup, MarkupKind, MarkupRule, ModelPrice, Tier
from pricing.errors import CatalogError, ModelNotAllowed, UnknownModelPrice, UnknownTier
from pricing.estimation import estimate_prompt_tokens
from pricing.loading import load_catalog, parse_catalog
from pricing.matching import ResolvedMarkup, resolve_markup, select_rule
from pricing.money import (
    DEFAULT_USD_PER_CREDIT,
    MICRO_PER_CREDIT,
    credits_to_micro,
    micro_to_credits,
    micro_to_usd,
    usd_to_micro,
)
from pricing.quoting import DEFAULT_MAX_OUTPUT_TOKENS, ModelRates, Priced, effective_rates, price, quote

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "DEFAULT_USD_PER_CREDIT",
    "MARKUP_KINDS",
    "MICRO_PER_CREDIT",
    "Catalog",
    "CatalogError",
    "Markup",
    "MarkupKind",
    "MarkupRule",
    "ModelNotAllowed",
    "ModelPrice",
    "ModelRates",
    "Priced",
    "ResolvedMarkup",
    "Tier",
    "UnknownModelPrice",
    "UnknownTier",
    "check_access",
    "credits_to_micro",
    "effective_rates",
    "estimate_prompt_tokens",
    "load_catalog",
    "micro_to_credits",
    "micro_to_usd",
    "parse_catalog",
    "price",
    "quote",
    "resolve_markup",
    "select_rule",
    "usd_to_micro",
]
