"""The admin-editable catalog as rows: tiers, model access per tier, pricing rules.

The ledger stores what pricing hands it (dicts, kept as JSON text) and validates
nothing about their contents. Every write also bumps the single ``catalog_revision``
row in the same transaction, which serializes catalog writers and gives readers a
stamp that changes on any write, deletes included.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeAlias

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from pricing.errors import InvalidOperation

from .tables import CatalogRevisionRow, PricingRuleRow, TierModelAccessRow, TierRow
from .types import MODEL_ACCESS_EFFECTS, CatalogRowsSnapshot
from .upsert import insert

AccessRow: TypeAlias = tuple[str, str] | Mapping[str, Any]


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def to_json(what: str, data: Mapping[str, Any]) -> str:
    if not isinstance(data, Mapping):
        raise InvalidOperation(f"{what}: data must be a mapping, not {type(data).__name__}")
    try:
        return json.dumps(dict(data), sort_keys=True, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidOperation(f"{what}: data cannot be stored as JSON ({error})") from error


def bump(session: Session, updated_by: str, now: datetime) -> None:
    """Count one catalog write; taken first, so concurrent writers queue on this row."""
    stmt = (
        insert(session, CatalogRevisionRow)
        .values(id=1, revision=1, updated_at=now, updated_by=updated_by)
        .on_conflict_do_update(
            index_elements=[CatalogRevisionRow.id],
            set_={"revision": CatalogRevisionRow.revision + 1, "updated_at": now, "updated_by": updated_by},
        )
    )
    session.execute(stmt)


def stamp(session: Session) -> str:
    """Cheap to compute; changes when any catalog row is written through the ledger or by hand."""
    revision = session.scalar(select(CatalogRevisionRow.revision).where(CatalogRevisionRow.id == 1)) or 0
    parts: list[str] = [str(revision)]
    for table in (TierRow, TierModelAccessRow, PricingRuleRow):
        count, latest = session.execute(select(func.count(), func.max(table.updated_at))).one()
        parts.append(f"{count}/{latest.isoformat() if latest is not None else '-'}")
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    return f"{revision}-{digest}"


def snapshot(session: Session) -> CatalogRowsSnapshot:
    tiers = [
        {
            "code": row.code,
            "name": row.name,
            "data": json.loads(row.data),
            "updated_at": row.updated_at,
            "updated_by": row.updated_by,
        }
        for row in session.scalars(select(TierRow).order_by(TierRow.code))
    ]
    access = [
        {
            "tier_code": row.tier_code,
            "position": row.position,
            "pattern": row.pattern,
            "effect": row.effect,
            "updated_at": row.updated_at,
            "updated_by": row.updated_by,
        }
        for row in session.scalars(
            select(TierModelAccessRow).order_by(TierModelAccessRow.tier_code, TierModelAccessRow.position)
        )
    ]
    rules = [
        {
            "id": row.id,
            "data": json.loads(row.data),
            "priority": row.priority,
            "active": row.active,
            "updated_at": row.updated_at,
            "updated_by": row.updated_by,
        }
        for row in session.scalars(select(PricingRuleRow).order_by(PricingRuleRow.id))
    ]
    return CatalogRowsSnapshot(
        tiers=tiers, tier_model_access=access, pricing_rules=rules, stamp=stamp(session)
    )


def upsert_tier(
    session: Session, code: str, *, name: str, data: Mapping[str, Any], updated_by: str, now: datetime
) -> None:
    text = to_json(f"tier {code!r}", data)
    bump(session, updated_by, now)
    values = {"name": name, "data": text, "updated_at": now, "updated_by": updated_by}
    session.execute(
        insert(session, TierRow)
        .values(code=code, **values)
        .on_conflict_do_update(index_elements=[TierRow.code], set_=values)
    )


def delete_tier(session: Session, code: str, *, updated_by: str, now: datetime) -> bool:
    if session.get(TierRow, code) is None:
        return False
    bump(session, updated_by, now)
    session.execute(delete(TierModelAccessRow).where(TierModelAccessRow.tier_code == code))
    session.execute(delete(TierRow).where(TierRow.code == code))
    return True


def _access_pairs(tier_code: str, rows: Iterable[AccessRow]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for row in rows:
        if isinstance(row, Mapping):
            pattern, effect = row.get("pattern"), row.get("effect")
        else:
            pattern, effect = row
        if not isinstance(pattern, str) or not pattern or len(pattern) > 255:
            raise InvalidOperation(f"tier {tier_code!r}: a model pattern must be 1 to 255 characters")
        if effect not in MODEL_ACCESS_EFFECTS:
            raise InvalidOperation(f"tier {tier_code!r}: effect must be 'allow' or 'deny', got {effect!r}")
        pairs.append((pattern, str(effect)))
    return pairs


def set_model_access(
    session: Session, tier_code: str, rows: Sequence[AccessRow], *, updated_by: str, now: datetime
) -> None:
    pairs = _access_pairs(tier_code, rows)
    bump(session, updated_by, now)
    if session.get(TierRow, tier_code) is None:
        raise InvalidOperation(f"no tier {tier_code!r} in the catalog rows: upsert the tier first")
    session.execute(delete(TierModelAccessRow).where(TierModelAccessRow.tier_code == tier_code))
    session.add_all(
        TierModelAccessRow(
            tier_code=tier_code,
            position=position,
            pattern=pattern,
            effect=effect,
            updated_at=now,
            updated_by=updated_by,
        )
        for position, (pattern, effect) in enumerate(pairs)
    )
    session.flush()


def upsert_pricing_rule(
    session: Session,
    rule_id: str,
    *,
    data: Mapping[str, Any],
    priority: int,
    active: bool,
    updated_by: str,
    now: datetime,
) -> None:
    text = to_json(f"pricing rule {rule_id!r}", data)
    bump(session, updated_by, now)
    values = {
        "data": text,
        "priority": priority,
        "active": active,
        "updated_at": now,
        "updated_by": updated_by,
    }
    session.execute(
        insert(session, PricingRuleRow)
        .values(id=rule_id, **values)
        .on_conflict_do_update(index_elements=[PricingRuleRow.id], set_=values)
    )


def delete_pricing_rule(session: Session, rule_id: str, *, updated_by: str, now: datetime) -> bool:
    if session.get(PricingRuleRow, rule_id) is None:
        return False
    bump(session, updated_by, now)
    session.execute(delete(PricingRuleRow).where(PricingRuleRow.id == rule_id))
    return True
