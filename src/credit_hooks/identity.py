"""Who pays for a call: the billing identity carried by LiteLLM's ``UserAPIKeyAuth``.

The same object reaches us whether the key is one of LiteLLM's own virtual keys
or one issued by our ``custom_auth``; the latter also names the account the key
is bound to, which then pays regardless of the order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from litellm.proxy._types import UserAPIKeyAuth

from ledger.types import storable_text
from pricing.errors import MalformedRequest

# set by credit_hooks.auth on keys issued by our CLI: server-side, never from the request body
BOUND_ACCOUNT_KEY = "credits_account_id"
# a key in BYOK mode (its calls use the user's own provider key): set by the admin, never by the request
BYOK_KEY = "credits_byok"
# where a client sets each id: LiteLLM's own keys take the end user from the body's ``user``
_REQUEST_FIELD = {"end_user": "user"}


@dataclass(frozen=True, slots=True)
class Identity:
    kind: str
    external_id: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.external_id}"


@dataclass(frozen=True, slots=True)
class Caller:
    """What the gate needs to know about the key that made a call."""

    identity: Identity | None
    bound_account_id: int | None
    api_key_hash: str | None
    user_id: str | None
    team_id: str | None
    end_user_id: str | None
    byok: bool = False


def _value(auth: UserAPIKeyAuth, kind: str) -> str | None:
    raw = {
        "team": auth.team_id,
        "user": auth.user_id,
        "end_user": auth.end_user_id,
        "key": auth.api_key or auth.token,
    }[kind]
    if not raw:
        return None
    value = str(raw)
    if not storable_text(value):
        # the account's external id: refused here with the field named, not a database error
        raise MalformedRequest(_REQUEST_FIELD.get(kind, kind), "holds a NUL character or invalid Unicode")
    return value


def caller_from_auth(auth: UserAPIKeyAuth, order: Iterable[str]) -> Caller:
    identity = next(
        (Identity(kind, value) for kind in order if (value := _value(auth, kind)) is not None),
        None,
    )
    metadata = auth.metadata or {}
    bound = metadata.get(BOUND_ACCOUNT_KEY)
    return Caller(
        identity=identity,
        bound_account_id=int(bound) if bound is not None else None,
        api_key_hash=auth.api_key or auth.token,
        user_id=auth.user_id,
        team_id=auth.team_id,
        end_user_id=auth.end_user_id,
        byok=metadata.get(BYOK_KEY) is True,
    )
