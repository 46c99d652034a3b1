"""The catalog in force: the pricing YAML merged with the admin-edited database rows.

Both are watched: the file by its modification stamp, the rows by the ledger's
catalog stamp (which every row write changes). An edit that does not validate
is logged with the file (or ``database``), place and reason, and the last good
catalog stays in force: a typo never takes a running proxy down. The merge
rules are ``pricing.merge``'s: a row replaces the YAML entry with the same code
or id, new ones are added.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ledger import CatalogRowsSnapshot
from pricing import Catalog, CatalogRows, merge_catalog
from pricing.errors import CatalogError

log = logging.getLogger("credits.catalog")

RowsReader = Callable[[], CatalogRowsSnapshot]
StampReader = Callable[[], str]


def _rows(snapshot: CatalogRowsSnapshot | None) -> CatalogRows:
    if snapshot is None:
        return CatalogRows()
    return CatalogRows(
        tiers=snapshot.tiers,
        tier_model_access=snapshot.tier_model_access,
        pricing_rules=snapshot.pricing_rules,
    )


class CatalogSource:
    def __init__(
        self, path: Path, rows: RowsReader | None = None, rows_stamp: StampReader | None = None
    ) -> None:
        self.path = path
        self._read_rows = rows
        self._read_rows_stamp = rows_stamp
        self.last_error: CatalogError | None = None
        self._file_stamp_seen = self._file_stamp()
        self._rows_stamp_seen = self._rows_stamp()
        text = path.read_text(encoding="utf-8")
        try:
            self._current = self._merge(text)
        except CatalogError as exc:
            if exc.file != "database":
                raise  # a bad file at start is fatal: there is no last good catalog to keep
            # bad rows must not keep the proxy from starting: run on the file alone and say so
            log.error("pricing rows in the database refused, running on %s alone: %s", path, exc)
            self.last_error = exc
            self._current = merge_catalog(text, CatalogRows(), source=str(path))

    @property
    def current(self) -> Catalog:
        return self._current

    def _file_stamp(self) -> tuple[int, int]:
        stat = self.path.stat()
        return (stat.st_mtime_ns, stat.st_size)

    def _rows_stamp(self) -> str:
        return self._read_rows_stamp() if self._read_rows_stamp is not None else ""

    def _merge(self, text: str) -> Catalog:
        snapshot = self._read_rows() if self._read_rows is not None else None
        return merge_catalog(text, _rows(snapshot), source=str(self.path))

    def refresh(self) -> bool:
        """Reload if the file or the rows changed; True when a new catalog is now in force."""
        try:
            file_stamp = self._file_stamp()
            rows_stamp = self._rows_stamp()
            if (file_stamp, rows_stamp) == (self._file_stamp_seen, self._rows_stamp_seen):
                return False
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            log.error(
                "pricing catalog %s unreadable, version %s stays: %s", self.path, self._current.version, exc
            )
            return False
        self._file_stamp_seen, self._rows_stamp_seen = file_stamp, rows_stamp
        try:
            catalog = self._merge(text)
        except CatalogError as exc:
            self.last_error = exc
            log.error(
                "pricing catalog edit refused, version %s stays in force: %s", self._current.version, exc
            )
            return False
        except Exception as exc:
            # whatever else goes wrong reading an edit, the running catalog must survive it
            self.last_error = CatalogError(str(self.path), "catalog", f"could not be loaded: {exc}")
            log.exception("pricing catalog edit refused, version %s stays in force", self._current.version)
            return False
        self.last_error = None
        if catalog.version != self._current.version:
            log.warning("pricing catalog reloaded: version %s -> %s", self._current.version, catalog.version)
        self._current = catalog
        return True

    def check(self, rows: CatalogRows) -> Catalog:
        """The catalog these rows would make with the file as it is now; ``CatalogError`` if invalid."""
        return merge_catalog(self.path.read_text(encoding="utf-8"), rows, source=str(self.path))
