"""The catalog in force, reloaded when its file changes.

An edit that does not validate is logged with the file, place and reason, and
the last good catalog stays in force: a typo never takes a running proxy down.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pricing import Catalog, load_catalog
from pricing.errors import CatalogError

log = logging.getLogger("credits.catalog")


class CatalogSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._file_stamp()
        # a bad catalog at start is fatal: there is no last good one to keep
        self._current = load_catalog(path)
        self.last_error: CatalogError | None = None

    @property
    def current(self) -> Catalog:
        return self._current

    def _file_stamp(self) -> tuple[int, int]:
        stat = self.path.stat()
        return (stat.st_mtime_ns, stat.st_size)

    def refresh(self) -> bool:
        """Reload if the file changed; True when a new catalog is now in force."""
        try:
            stamp = self._file_stamp()
        except OSError as exc:
            log.error(
                "pricing catalog %s unreadable, keeping version %s: %s", self.path, self._current.version, exc
            )
            return False
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            catalog = load_catalog(self.path)
        except CatalogError as exc:
            self.last_error = exc
            log.error(
                "pricing catalog edit refused, version %s stays in force: %s", self._current.version, exc
            )
            return False
        self.last_error = None
        if catalog.version != self._current.version:
            log.warning("pricing catalog reloaded: version %s -> %s", self._current.version, catalog.version)
        self._current = catalog
        return True
