"""The ``Ledger`` facade's catalog rows: tiers, model access and pricing rules kept in the database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pricing.errors import InvalidOperation

from . import catalog_rows
from .catalog_rows import AccessRow
from .service_base import LedgerBase
from .types import CatalogRowsSnapshot


class CatalogService(LedgerBase):
    """The pricing catalog's database rows (tiers, model access, pricing rules)."""

    # -- catalog rows ---------------------------------------------------------

    def catalog_rows(self) -> CatalogRowsSnapshot:
        """Every catalog row (JSON ``data`` decoded) and a stamp, read in one transaction."""
        with self._uow() as session:
            return catalog_rows.snapshot(session)

    def catalog_stamp(self) -> str:
        """The ``stamp`` ``catalog_rows()`` would return now, for cheap change polling."""
        with self._uow() as session:
            return catalog_rows.stamp(session)

    def upsert_tier_row(self, code: str, *, name: str, data: Mapping[str, Any], updated_by: str) -> None:
        if not code or len(code) > 64:
            raise InvalidOperation("a tier code must be 1 to 64 characters")
        with self._uow() as session:
            catalog_rows.upsert_tier(
                session, code, name=name, data=data, updated_by=updated_by, now=self._clock()
            )

    def delete_tier_row(self, code: str, *, updated_by: str) -> bool:
        """Delete a tier row and its model access rows; False when there was none."""
        with self._uow() as session:
            return catalog_rows.delete_tier(session, code, updated_by=updated_by, now=self._clock())

    def set_model_access_rows(self, tier_code: str, rows: Sequence[AccessRow], *, updated_by: str) -> None:
        """Replace the tier's model access rows: ``(pattern, effect)`` pairs or mappings with
        ``pattern`` and ``effect`` (``allow`` or ``deny``), kept in the order given."""
        with self._uow() as session:
            catalog_rows.set_model_access(session, tier_code, rows, updated_by=updated_by, now=self._clock())

    def upsert_pricing_rule_row(
        self,
        rule_id: str,
        *,
        data: Mapping[str, Any],
        priority: int = 0,
        active: bool = True,
        updated_by: str,
    ) -> None:
        if not rule_id or len(rule_id) > 128:
            raise InvalidOperation("a pricing rule id must be 1 to 128 characters")
        with self._uow() as session:
            catalog_rows.upsert_pricing_rule(
                session,
                rule_id,
                data=data,
                priority=priority,
                active=active,
                updated_by=updated_by,
                now=self._clock(),
            )

    def delete_pricing_rule_row(self, rule_id: str, *, updated_by: str) -> bool:
        """Delete a pricing rule row; False when there was none."""
        with self._uow() as session:
            return catalog_rows.delete_pricing_rule(
                session, rule_id, updated_by=updated_by, now=self._clock()
            )
