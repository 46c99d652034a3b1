"""The most a request can cost, read from the request body and LiteLLM's cost map.

Token calls (chat, text completion, responses, embeddings) become a
``pricing.quote`` input: prompt tokens (over-estimated from the text) and the
completion cap. Calls priced per image, character or second become a USD
worst case priced like any cost. A model group with several deployments is
held at its dearest one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import litellm

from pricing import ModelRates, estimate_prompt_tokens
from pricing.errors import MalformedRequest

TOKEN_CALLS = frozenset({"completion", "text_completion", "responses", "embedding"})
_CALL_ALIASES = {
    "acompletion": "completion",
    "atext_completion": "text_completion",
    "aresponses": "responses",
    "aembedding": "embedding",
    "embeddings": "embedding",
    "aimage_generation": "image_generation",
    "aspeech": "speech",
    "atranscription": "transcription",
    "audio_transcription": "transcription",
    "amoderation": "moderation",
}
_DEPLOYMENT_CACHE_SECONDS = 30.0


# the field each token call cannot do without; LiteLLM would refuse the call after our hold
_REQUIRED_FIELD = {
    "completion": "messages",
    "text_completion": "prompt",
    "embedding": "input",
    "responses": "input",
}
MAX_MODEL_NAME = 255


def normalise_call_type(call_type: str | None) -> str:
    name = str(call_type or "completion")
    name = name.split(".")[-1]
    return _CALL_ALIASES.get(name, name)


@dataclass(frozen=True, slots=True)
class Deployment:
    provider: str
    rates: ModelRates
    info: dict[str, Any]
    # LiteLLM access groups (model_info.access_groups) a tier may name as `group:NAME`
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class WorstCase:
    """Either a token quote (rates set) or a USD amount (cost_usd set), for one deployment."""

    provider: str
    prompt_tokens: int
    max_tokens: int | None
    rates: ModelRates | None
    cost_usd: Decimal | None


def _decimal(value: object) -> Decimal:
    return Decimal(str(value)) if value else Decimal(0)


def _deployment(litellm_model: str, model_info: dict[str, Any] | None) -> Deployment:
    try:
        _, provider, _, _ = litellm.get_llm_provider(litellm_model)
    except Exception:  # an unmapped provider still gets a hold, priced at the fallback
        provider = litellm_model.split("/", 1)[0] if "/" in litellm_model else "unknown"
    info: dict[str, Any] = {}
    try:
        info = dict(litellm.get_model_info(litellm_model))
    except Exception:
        info = dict(litellm.model_cost.get(litellm_model.split("/", 1)[-1], {}))
    # costs the operator put on the deployment's model_info win over the public map
    info.update({k: v for k, v in (model_info or {}).items() if v is not None})
    rates = ModelRates(
        input_per_token=_decimal(info.get("input_cost_per_token")),
        output_per_token=_decimal(info.get("output_cost_per_token")),
        max_output_tokens=info.get("max_output_tokens") or info.get("max_tokens"),
    )
    groups = frozenset(str(g) for g in (model_info or {}).get("access_groups") or ())
    return Deployment(provider=str(provider), rates=rates, info=info, groups=groups)


class DeploymentIndex:
    """Public model name → its deployments, cached briefly because the router can change at run time."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, tuple[Deployment, ...]]] = {}

    def deployments(self, model_group: str) -> tuple[Deployment, ...]:
        now = time.monotonic()
        hit = self._cache.get(model_group)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = tuple(self._lookup(model_group))
        self._cache[model_group] = (now + _DEPLOYMENT_CACHE_SECONDS, found)
        return found

    def servable(self, model_group: str) -> bool:
        """False when no deployment, alias, wildcard or known provider could serve the name."""
        from litellm.proxy import proxy_server

        router = proxy_server.llm_router
        if router is None or router.get_model_list(model_name=model_group):
            return True
        try:
            litellm.get_llm_provider(model_group)  # the SDK may still serve a provider-qualified name
        except Exception:
            return False
        return True

    def groups(self, model_group: str) -> frozenset[str]:
        return frozenset().union(*(d.groups for d in self.deployments(model_group)))

    def model_groups(self) -> list[str]:
        from litellm.proxy import proxy_server

        router = proxy_server.llm_router
        return sorted(router.get_model_names()) if router is not None else []

    def _lookup(self, model_group: str) -> list[Deployment]:
        from litellm.proxy import proxy_server

        router = proxy_server.llm_router
        entries = router.get_model_list(model_name=model_group) if router is not None else None
        if not entries:
            return [_deployment(model_group, None)]
        return [
            _deployment(str(e["litellm_params"]["model"]), e.get("model_info"))
            for e in entries
            if e.get("litellm_params", {}).get("model")
        ]


def _prompt_of(call: str, data: dict[str, Any]) -> Any:
    if call == "completion":
        return data.get("messages")
    if call == "text_completion":
        return data.get("prompt")
    if call == "responses":
        instructions = data.get("instructions") or ""
        return [{"content": instructions}, *_as_items(data.get("input"))]
    return data.get("input")


def _as_items(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [{"content": value}]


def _prompt_tokens(prompt: Any) -> int:
    if prompt is None:
        return 0
    if isinstance(prompt, str):
        return estimate_prompt_tokens(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        return len(prompt)  # already tokens
    if isinstance(prompt, list):
        messages = [p if isinstance(p, dict) else {"content": _text(p)} for p in prompt]
        return estimate_prompt_tokens(messages)
    return estimate_prompt_tokens(str(prompt))


def _text(item: Any) -> str:
    if isinstance(item, list) and all(isinstance(p, int) for p in item):
        return "x" * (3 * len(item))  # a token list: keep the over-estimate's scale
    return str(item)


def max_tokens_key(call_type: str, data: dict[str, Any]) -> str | None:
    """The request field that caps the output of this call type, if it has one."""
    call = normalise_call_type(call_type)
    if call == "responses":
        return "max_output_tokens"
    if call == "completion":
        return "max_completion_tokens" if "max_completion_tokens" in data else "max_tokens"
    if call == "text_completion":
        return "max_tokens"
    return None


def _max_tokens(call: str, data: dict[str, Any]) -> int | None:
    if call == "embedding":
        return 0
    keys = ("max_output_tokens",) if call == "responses" else ("max_completion_tokens", "max_tokens")
    for key in keys:
        value = data.get(key)
        if isinstance(value, int) and value >= 0:
            choices = data.get("n") if call == "completion" else 1
            return value * (choices if isinstance(choices, int) and choices > 0 else 1)
    return None


def _unit_cost(call: str, data: dict[str, Any], info: dict[str, Any], fallback: Decimal) -> Decimal:
    if call == "image_generation":
        n = data.get("n")
        count = n if isinstance(n, int) else 1
        per_image = _decimal(info.get("output_cost_per_image") or info.get("input_cost_per_image"))
        return (per_image or fallback) * max(1, count)
    if call == "speech":
        per_char = _decimal(info.get("input_cost_per_character"))
        text = str(data.get("input") or "")
        return per_char * len(text) if per_char else fallback
    return fallback


def check_request(call_type: str, model_group: str, data: dict[str, Any], index: DeploymentIndex) -> None:
    """Refuse, before any hold, what the proxy would refuse after it."""
    if len(model_group) > MAX_MODEL_NAME:
        raise MalformedRequest("model", f"longer than {MAX_MODEL_NAME} characters")
    call = normalise_call_type(call_type)
    field = _REQUIRED_FIELD.get(call)
    if field is not None and data.get(field) in (None, "", []):
        raise MalformedRequest(field, "missing or empty")
    if field == "messages" and not isinstance(data.get(field), list):
        raise MalformedRequest(field, "must be a list of messages")
    if not index.servable(model_group):
        raise MalformedRequest(
            "model", f"no model named {model_group!r} on this proxy (GET /v1/models lists them)"
        )


def worst_cases(
    index: DeploymentIndex, call_type: str, model_group: str, data: dict[str, Any], fallback_usd: Decimal
) -> list[WorstCase]:
    call = normalise_call_type(call_type)
    deployments = index.deployments(model_group)
    if call in TOKEN_CALLS:
        prompt_tokens = _prompt_tokens(_prompt_of(call, data))
        max_tokens = _max_tokens(call, data)
        return [WorstCase(d.provider, prompt_tokens, max_tokens, d.rates, None) for d in deployments]
    return [
        WorstCase(d.provider, 0, 0, None, _unit_cost(call, data, d.info, fallback_usd)) for d in deployments
    ]
