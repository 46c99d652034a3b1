"""What a finished call cost, read from what LiteLLM hands the success hooks.

The cost is LiteLLM's float USD; it becomes a ``Decimal`` here, once. A double
carries about 15 significant digits and LiteLLM's sums leave noise past them
(10 x $0.0000025 + 20 x $0.00001 = 0.00022500000000000002), so the float is read
to 15 significant digits: $0.000225 exactly, and 2x that is 0.45 credits, not
0.450001 after the ceiling to micro-credits.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any

import litellm

from credit_hooks.worst_case import normalise_call_type

HOLD_ID_KEY = "credits_hold_id"
_FLOAT_DIGITS = Context(prec=15)


@dataclass(frozen=True, slots=True)
class Outcome:
    hold_id: str
    model_group: str
    litellm_model: str
    provider: str
    call_type: str
    cost_usd: Decimal
    tokens_in: int
    tokens_out: int
    cache_hit: bool
    stream: bool


def usd(value: object) -> Decimal:
    """The one float → Decimal conversion of a provider cost."""
    if value is None:
        return Decimal(0)
    exact = Decimal(str(value))
    if not exact.is_finite() or exact < 0:
        raise ValueError(f"provider cost {value!r} is not a non-negative number")
    if isinstance(value, float):
        exact = _FLOAT_DIGITS.create_decimal(exact).normalize()
    return exact


def request_metadata(data: dict[str, Any]) -> dict[str, Any]:
    """The metadata dict LiteLLM carries to the logging events for this route.

    Most routes use ``metadata``; some (responses, assistants, batches) use
    ``litellm_metadata``. LiteLLM has already filled the right one with the
    key's identity by the time our pre-call hook runs.
    """
    for name in ("litellm_metadata", "metadata"):
        meta = data.get(name)
        if isinstance(meta, dict) and "user_api_key_hash" in meta:
            return meta
    meta = data.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        data["metadata"] = meta
    return meta


def hold_id_from_kwargs(kwargs: dict[str, Any]) -> str | None:
    params = kwargs.get("litellm_params") or {}
    for name in ("metadata", "litellm_metadata"):
        meta = params.get(name) or {}
        if isinstance(meta, dict) and meta.get(HOLD_ID_KEY):
            return str(meta[HOLD_ID_KEY])
    return None


def _cache_cost(litellm_model: str, tokens_in: int, tokens_out: int) -> Decimal:
    """What a cache hit would have cost had it gone to the provider."""
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=litellm_model, prompt_tokens=tokens_in, completion_tokens=tokens_out
        )
    except Exception:
        return Decimal(0)
    return usd(prompt_cost) + usd(completion_cost)


def outcome_from_event(kwargs: dict[str, Any], charge_cache_hits: bool) -> Outcome | None:
    """From ``async_log_success_event``: the standard logging object holds it all."""
    hold_id = hold_id_from_kwargs(kwargs)
    if hold_id is None:
        return None
    slo = kwargs.get("standard_logging_object") or {}
    tokens_in = int(slo.get("prompt_tokens") or 0)
    tokens_out = int(slo.get("completion_tokens") or 0)
    litellm_model = str(slo.get("model") or kwargs.get("model") or "")
    cache_hit = bool(slo.get("cache_hit") or kwargs.get("cache_hit"))
    cost = usd(kwargs.get("response_cost", slo.get("response_cost")))
    if cache_hit:
        cost = _cache_cost(litellm_model, tokens_in, tokens_out) if charge_cache_hits else Decimal(0)
    return Outcome(
        hold_id=hold_id,
        model_group=str(slo.get("model_group") or kwargs.get("model") or ""),
        litellm_model=litellm_model,
        provider=str(slo.get("custom_llm_provider") or kwargs.get("custom_llm_provider") or ""),
        call_type=normalise_call_type(slo.get("call_type") or kwargs.get("call_type")),
        cost_usd=cost,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cache_hit=cache_hit,
        stream=bool(slo.get("stream") or kwargs.get("stream")),
    )


def outcome_from_response(
    hold_id: str, data: dict[str, Any], response: Any, call_type: str, charge_cache_hits: bool
) -> Outcome | None:
    """From ``async_post_call_success_hook`` (non-streaming): the response carries cost and usage."""
    hidden = getattr(response, "_hidden_params", None) or {}
    if "response_cost" not in hidden:
        return None  # LiteLLM did not price it here; the success event will
    usage = getattr(response, "usage", None)
    tokens_in = int(getattr(usage, "prompt_tokens", 0) or getattr(usage, "input_tokens", 0) or 0)
    tokens_out = int(getattr(usage, "completion_tokens", 0) or getattr(usage, "output_tokens", 0) or 0)
    litellm_model = str(hidden.get("litellm_model_name") or hidden.get("model") or data.get("model") or "")
    cache_hit = bool(hidden.get("cache_hit"))
    cost = usd(hidden.get("response_cost"))
    if cache_hit:
        cost = _cache_cost(litellm_model, tokens_in, tokens_out) if charge_cache_hits else Decimal(0)
    return Outcome(
        hold_id=hold_id,
        model_group=str(data.get("model") or ""),
        litellm_model=litellm_model,
        provider=str(hidden.get("custom_llm_provider") or ""),
        call_type=normalise_call_type(call_type),
        cost_usd=cost,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cache_hit=cache_hit,
        stream=False,
    )
