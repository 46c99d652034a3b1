"""API keys: issued once in plaintext, stored only as a sha256 hash."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .tables import ApiKeyRow

KEY_PREFIX = "sk-cr-"
DISPLAY_PREFIX_LEN = 10


def new_plaintext() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(plaintext: str) -> str:
    """sha256 hex of a key; the only form in which a key is stored or compared."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def create(
    session: Session,
    account_id: int,
    plaintext: str,
    *,
    user_id: str | None,
    team_id: str | None,
    alias: str | None,
    now: datetime,
    byok: bool = False,
) -> ApiKeyRow:
    row = ApiKeyRow(
        key_hash=hash_key(plaintext),
        key_prefix=plaintext[:DISPLAY_PREFIX_LEN],
        account_id=account_id,
        user_id=user_id,
        team_id=team_id,
        alias=alias,
        created_at=now,
        byok=byok,
    )
    session.add(row)
    session.flush()
    return row


def by_hash(session: Session, key_hash: str) -> ApiKeyRow | None:
    # An indexed equality on the hash: no timing side channel on the secret itself.
    return session.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash)).one_or_none()
