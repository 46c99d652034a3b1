"""The LiteLLM callback: every hook the gate needs, defined on this very class.

LiteLLM's proxy only runs a hook that the registered class itself (or a
subclass of it below ``CustomLogger``) defines, so nothing here is inherited
from a helper base class of ours.

Flow of one call:
  pre-call      resolve the account, check access, hold the worst case;
                the server-generated hold id travels in the request metadata
  post-call     (non-streaming) settle from the priced response *before* the
                client gets it, so the charge is on disk first
  success event settle streams (their cost exists only here); for anything
                already settled this is a no-op
  stream end    the streaming iterator waits for that settle before it
                returns, so the client's stream ends after the charge is on disk
  failure       void the hold (idempotent: a rejected pre-call fires it too)
  headers       x-credits-remaining, x-credits-charged
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth

from ledger import micro_to_credit_str as credits_text
from pricing.errors import CreditsError

from . import runtime
from .http_errors import internal_error, to_proxy_exception
from .identity import caller_from_auth
from .outcome import (
    HOLD_ID_KEY,
    hold_id_from_kwargs,
    outcome_from_event,
    outcome_from_response,
    request_metadata,
)
from .settings import CacheHitCharge

log = logging.getLogger("credits.hooks")

ACCOUNT_ID_KEY = "credits_account_id"
CALL_TYPE_KEY = "credits_call_type"
_EXEMPT_ROLES = {LitellmUserRoles.PROXY_ADMIN, LitellmUserRoles.PROXY_ADMIN.value}
# bounded: a stuck ledger must not hold a finished stream open for long
STREAM_SETTLE_WAIT_SECONDS = 10.0
_renewals: set[asyncio.Task[None]] = set()


def _strip_client_keys(data: dict[str, Any]) -> None:
    """A client may send metadata; it must never choose which hold gets charged or voided."""
    for name in ("metadata", "litellm_metadata"):
        meta = data.get(name)
        if isinstance(meta, dict):
            meta.pop(HOLD_ID_KEY, None)
            meta.pop(ACCOUNT_ID_KEY, None)
            meta.pop(CALL_TYPE_KEY, None)


def _hold_id(data: dict[str, Any]) -> str | None:
    for name in ("metadata", "litellm_metadata"):
        meta = data.get(name)
        if isinstance(meta, dict) and meta.get(HOLD_ID_KEY):
            return str(meta[HOLD_ID_KEY])
    return None


def _account_id(data: dict[str, Any]) -> int | None:
    for name in ("metadata", "litellm_metadata"):
        meta = data.get(name)
        if isinstance(meta, dict) and meta.get(ACCOUNT_ID_KEY) is not None:
            return int(meta[ACCOUNT_ID_KEY])
    return None


class CreditsCallback(CustomLogger):
    async def async_pre_call_hook(
        self, user_api_key_dict: UserAPIKeyAuth, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any]:
        _strip_client_keys(data)
        model_group = data.get("model")
        if not model_group or user_api_key_dict.user_role in _EXEMPT_ROLES:
            return data
        gate = runtime.gate()
        runtime.ensure_background_jobs()
        caller = None
        try:
            caller = caller_from_auth(user_api_key_dict, gate.settings.account_order)
            call = await gate.admit(caller, str(model_group), str(call_type), data)
        except CreditsError as exc:
            log.info("refused %s for %s: %s", str(model_group)[:100], caller and caller.identity, exc)
            raise to_proxy_exception(exc) from None
        except Exception:
            log.exception("pre-call billing failed for %s", caller and caller.identity)
            raise internal_error() from None
        meta = request_metadata(data)
        meta[HOLD_ID_KEY] = call.hold_id
        meta[ACCOUNT_ID_KEY] = call.account_id
        meta[CALL_TYPE_KEY] = str(call_type)
        return data

    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: UserAPIKeyAuth, response: Any
    ) -> Any:
        hold_id = _hold_id(data)
        if hold_id is None or data.get("stream"):
            return response
        try:
            gate = runtime.gate()
            outcome = outcome_from_response(
                hold_id,
                data,
                response,
                str(request_metadata(data).get(CALL_TYPE_KEY) or "completion"),
                gate.settings.cache_hit_charge is CacheHitCharge.FULL,
            )
            if outcome is not None:
                # the caller is needed only for a hold this process did not open
                caller = (
                    None
                    if gate.is_open(hold_id)
                    else caller_from_auth(user_api_key_dict, gate.settings.account_order)
                )
                await gate.settle(outcome, caller)
        except Exception:
            # never fail a served response; the success event settles it instead
            log.exception("settling hold %s in the post-call hook failed", hold_id)
        return response

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: UserAPIKeyAuth, response: Any, request_data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        hold_id = _hold_id(request_data)
        gate = runtime.gate()
        renew_every = gate.settings.hold_ttl_seconds / 3
        renewed = time.monotonic()
        async for chunk in response:
            yield chunk
            if hold_id is not None and time.monotonic() - renewed > renew_every:
                renewed = time.monotonic()
                # a stream longer than the TTL keeps its hold; never block the stream on it
                task = asyncio.create_task(gate.renew(hold_id))
                _renewals.add(task)  # the loop keeps only a weak reference to a task
                task.add_done_callback(_renewals.discard)
        # LiteLLM schedules the success event when the upstream stream ends, before
        # this loop finishes; the proxy sends `[DONE]` only after we return. With
        # post-call guardrails it defers the event until after us: then do not wait.
        logging_obj = request_data.get("litellm_logging_obj")
        deferred = getattr(logging_obj, "_on_deferred_stream_complete", None) is not None
        if hold_id is not None and not deferred:
            landed = await gate.wait_landed(hold_id, STREAM_SETTLE_WAIT_SECONDS)
            if not landed:
                log.error("stream of hold %s ended before its charge was written", hold_id)

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        try:
            gate = runtime.gate()
            outcome = outcome_from_event(kwargs, gate.settings.cache_hit_charge is CacheHitCharge.FULL)
            if outcome is None or gate.settled(outcome.hold_id) is not None:
                return
            await gate.settle(outcome)
        except Exception:
            log.exception("CHARGE FAILED in the success event: %s", hold_id_from_kwargs(kwargs))

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        hold_id = hold_id_from_kwargs(kwargs)
        if hold_id is None:
            return
        gate = runtime.gate()
        # a stream that broke mid-flight was still billed by the provider for what it
        # delivered; LiteLLM reports that partial cost on the failure event
        partial = outcome_from_event(kwargs, gate.settings.cache_hit_charge is CacheHitCharge.FULL)
        if partial is not None and partial.cost_usd > 0:
            await gate.settle(partial)
            return
        await gate.release(hold_id, "call failed")

    async def async_post_call_failure_hook(
        self,
        request_data: dict[str, Any],
        original_exception: Exception,
        user_api_key_dict: UserAPIKeyAuth,
        traceback_str: str | None = None,
    ) -> None:
        hold_id = _hold_id(request_data)
        if hold_id is not None:
            await runtime.gate().release(hold_id, f"call failed: {type(original_exception).__name__}")

    async def async_post_call_response_headers_hook(
        self,
        data: dict[str, Any],
        user_api_key_dict: UserAPIKeyAuth,
        response: Any,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, Any] | None = None,
    ) -> dict[str, str] | None:
        account_id = _account_id(data)
        if account_id is None:
            return None
        headers: dict[str, str] = {}
        try:
            gate = runtime.gate()
            hold_id = _hold_id(data)
            settlement = gate.settled(hold_id) if hold_id else None
            if settlement is not None:
                headers["x-credits-charged"] = credits_text(settlement.charged)
            headers["x-credits-remaining"] = credits_text(await gate.available(hold_id, account_id))
        except Exception:
            log.exception("credit headers unavailable for account %s", account_id)
        return headers or None


credits_callback = CreditsCallback()
