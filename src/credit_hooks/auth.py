"""``general_settings.custom_auth`` for deployments without LiteLLM's Prisma database.

Accepts the proxy's master key (as an admin) and keys issued by
``credits-admin key issue`` (stored as sha256, bound to one account). With
LiteLLM's own virtual keys, leave this out: the hooks work from whatever
``UserAPIKeyAuth`` LiteLLM builds.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass

from fastapi import Request
from litellm.proxy._types import LitellmUserRoles, ProxyException, UserAPIKeyAuth

from ledger import ApiKey, hash_key

from . import runtime
from .identity import BOUND_ACCOUNT_KEY, BYOK_KEY

# a revoked key stops working within this many seconds on every replica
_KEY_CACHE_SECONDS = 10.0
# unknown keys are cached too (no database read per guess), so the cache is bounded
_KEY_CACHE_SIZE = 10_000


def _master_key() -> str | None:
    from litellm.proxy import proxy_server

    key = proxy_server.master_key
    return str(key) if key else None


def _unauthorized(reason: str) -> ProxyException:
    return ProxyException(
        message=f"Authentication failed: {reason}. Use a key issued by your provider (Authorization: Bearer sk-...).",
        type="auth_error",
        param="api_key",
        code=401,
    )


def _auth_for(key: ApiKey | None) -> UserAPIKeyAuth | None:
    if key is None or key.revoked_at is not None:
        return None
    return UserAPIKeyAuth(
        api_key=key.key_hash,
        token=key.key_hash,
        key_alias=key.alias,
        user_id=key.user_id,
        team_id=key.team_id,
        metadata={BOUND_ACCOUNT_KEY: key.account_id, BYOK_KEY: key.byok},
    )


@dataclass(frozen=True, slots=True)
class _Cached:
    """A key as looked up, with its ``UserAPIKeyAuth`` validated once.

    Validating that model's 120 fields took ~25 us a request; a copy of the validated
    one takes ~5 us.
    """

    expires: float
    key: ApiKey | None
    auth: UserAPIKeyAuth | None
    containers: tuple[str, ...]

    def fresh(self) -> UserAPIKeyAuth | None:
        """A copy per request: LiteLLM keeps the object we return and writes to it, also
        to its dicts and lists, so none of those is shared between requests either."""
        if self.auth is None:
            return None
        values = self.auth.__dict__
        return self.auth.model_copy(update={name: values[name].copy() for name in self.containers})


_keys: OrderedDict[str, _Cached] = OrderedDict()


def _cached(key: ApiKey | None, expires: float) -> _Cached:
    auth = _auth_for(key)
    values = auth.__dict__ if auth is not None else {}
    containers = tuple(n for n, v in values.items() if isinstance(v, dict | list | set))
    return _Cached(expires, key, auth, containers)


async def _lookup(plaintext: str) -> _Cached:
    digest = hash_key(plaintext)
    now = time.monotonic()
    hit = _keys.get(digest)
    if hit is not None and hit.expires > now:
        return hit
    gate = runtime.gate()
    found = _cached(await gate.run(gate.ledger.get_key_by_hash, digest), now + _KEY_CACHE_SECONDS)
    _keys[digest] = found
    _keys.move_to_end(digest)
    while len(_keys) > _KEY_CACHE_SIZE:
        _keys.popitem(last=False)
    return found


async def _find_key(plaintext: str) -> ApiKey | None:
    return (await _lookup(plaintext)).key


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    if not api_key:
        raise _unauthorized("no API key")
    master = _master_key()
    if master is not None and hmac.compare_digest(api_key.encode(), master.encode()):
        return UserAPIKeyAuth(
            api_key=hash_key(api_key), user_role=LitellmUserRoles.PROXY_ADMIN, user_id="admin"
        )
    auth = (await _lookup(api_key)).fresh()
    if auth is None:
        raise _unauthorized("unknown or revoked key")
    return auth
