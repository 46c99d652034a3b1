"""HTTP routes mounted on the proxy's own FastAPI app: a caller sees only its own account."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from litellm.proxy._types import UserAPIKeyAuth
from litellm.proxy.auth.user_api_key_auth import user_api_key_auth

from ledger import micro_to_credit_str as credits_text
from pricing.errors import CreditsError

from . import runtime
from .http_errors import headers_for, status_for
from .identity import caller_from_auth
from .prices import price_listing

router = APIRouter(prefix="/credits", tags=["credits"])
Auth = Annotated[UserAPIKeyAuth, Depends(user_api_key_auth)]


def _error(exc: CreditsError) -> JSONResponse:
    body = {"error": {"message": str(exc), "type": exc.code, "param": None, "code": str(status_for(exc))}}
    return JSONResponse(body, status_code=status_for(exc), headers=headers_for(exc))


@router.get("/balance", response_model=None)
async def balance(auth: Auth) -> dict[str, Any] | JSONResponse:
    gate = runtime.gate()
    try:
        account = await gate.account_for(caller_from_auth(auth, gate.settings.account_order))
        b = await gate.shown_balance(account.id)
    except CreditsError as exc:
        return _error(exc)
    return {
        "account": account.label,
        "tier": account.tier,
        "status": account.status,
        "balance_credits": credits_text(b.balance),
        "held_credits": credits_text(b.held),
        "available_credits": credits_text(b.available),
        "overdraft_limit_credits": credits_text(b.overdraft_limit),
    }


@router.get("/usage", response_model=None)
async def usage(auth: Auth, limit: Annotated[int, Query(ge=1, le=500)] = 20) -> dict[str, Any] | JSONResponse:
    gate = runtime.gate()
    try:
        account = await gate.account_for(caller_from_auth(auth, gate.settings.account_order))
        await gate.flush_charges()
        events = await gate.run(gate.ledger.usage, account.id, limit)
    except CreditsError as exc:
        return _error(exc)
    return {
        "account": account.label,
        "data": [
            {
                "time": e.created_at.isoformat(),
                "model": e.model,
                "provider": e.provider,
                "call_type": e.call_type,
                "tokens_in": e.tokens_in,
                "tokens_out": e.tokens_out,
                "provider_cost_usd": str(e.provider_cost_usd),
                "charged_credits": credits_text(e.charged),
                "markup_rule": e.markup_rule,
                "cache_hit": e.cache_hit,
                "stream": e.stream,
            }
            for e in events
        ],
    }


@router.get("/prices", response_model=None)
async def prices(auth: Auth) -> dict[str, Any] | JSONResponse:
    """The models the caller's plan may use, in credits per 1M tokens after markup, and its quotas."""
    gate = runtime.gate()
    try:
        account = await gate.account_for(caller_from_auth(auth, gate.settings.account_order))
        listing = await price_listing(gate, account)
    except CreditsError as exc:
        return _error(exc)
    return {"account": account.label, **listing}


_mounted = False


def mount() -> None:
    """Add the routes to the proxy's app once, however often the module is imported."""
    global _mounted
    if _mounted:
        return
    from litellm.proxy.proxy_server import app

    if not any(getattr(r, "path", "") == "/credits/balance" for r in app.routes):
        app.include_router(router)
    _mounted = True
