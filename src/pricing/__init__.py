"""pricing: the catalog (tiers, model access, markup rules) and pure pricing functions.

Modules, each named for what it holds: ``catalog`` (the validated catalog),
``loading`` (YAML, errors with lines, the precedence of pricing steps),
``merge`` (YAML + database rows), ``matching`` (which markup rule wins),
``quoting`` (``price``/``quote`` and their steps), ``byok``, ``free_models``,
``adjustments`` (time windows, volume discounts), ``tiers`` (allocation,
rollover, quota settings), ``quotas`` (billing periods and quota checks),
``limits`` (max_tokens), ``access``, ``price_list``, ``money``, ``errors``.

Imports only the standard library, pydantic and PyYAML; touches no database
and knows nothing of LiteLLM. Money is ``Decimal`` USD in, integer
micro-credits out, rounded up once (see :mod:`pricing.money`).
"""

from pricing.access import check_access
from pricing.adjustments import TimeWindow, VolumeDiscount, select_time_window, select_volume_discount
from pricing.byok import ByokRule, byok_fee, select_byok_rule
from pricing.catalog import MARKUP_KINDS, Catalog, Markup, MarkupKind, MarkupRule, ModelPrice, Tier
from pricing.errors import (
    ByokNotAllowed,
    CatalogError,
    MaxTokensExceeded,
    ModelNotAllowed,
    QuotaExceeded,
    UnknownModelPrice,
    UnknownTier,
)
from pricing.estimation import estimate_prompt_tokens
from pricing.free_models import FREE_MODEL_RULE_ID, FreeModels
from pricing.limits import enforce_max_tokens
from pricing.loading import load_catalog, parse_catalog
from pricing.matching import ResolvedMarkup, resolve_markup, select_rule
from pricing.merge import CatalogRows, merge_catalog
from pricing.money import (
    DEFAULT_USD_PER_CREDIT,
    MICRO_PER_CREDIT,
    credits_to_micro,
    micro_to_credits,
    micro_to_usd,
    usd_to_micro,
)
from pricing.price_list import ModelPriceView, price_list
from pricing.quotas import QuotaCheck, day_bounds, period_bounds, quota_checks
from pricing.quoting import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    ModelRates,
    Priced,
    PriceStep,
    effective_rates,
    price,
    quote,
)
from pricing.tiers import ModelQuota, Rollover, StripePriceIds

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "DEFAULT_USD_PER_CREDIT",
    "FREE_MODEL_RULE_ID",
    "MARKUP_KINDS",
    "MICRO_PER_CREDIT",
    "ByokNotAllowed",
    "ByokRule",
    "Catalog",
    "CatalogError",
    "CatalogRows",
    "FreeModels",
    "Markup",
    "MarkupKind",
    "MarkupRule",
    "MaxTokensExceeded",
    "ModelNotAllowed",
    "ModelPrice",
    "ModelPriceView",
    "ModelQuota",
    "ModelRates",
    "PriceStep",
    "Priced",
    "QuotaCheck",
    "QuotaExceeded",
    "ResolvedMarkup",
    "Rollover",
    "StripePriceIds",
    "Tier",
    "TimeWindow",
    "UnknownModelPrice",
    "UnknownTier",
    "VolumeDiscount",
    "byok_fee",
    "check_access",
    "credits_to_micro",
    "day_bounds",
    "effective_rates",
    "enforce_max_tokens",
    "estimate_prompt_tokens",
    "load_catalog",
    "merge_catalog",
    "micro_to_credits",
    "micro_to_usd",
    "parse_catalog",
    "period_bounds",
    "price",
    "price_list",
    "quota_checks",
    "quote",
    "resolve_markup",
    "select_byok_rule",
    "select_rule",
    "select_time_window",
    "select_volume_discount",
    "usd_to_micro",
]
