"""A real proxy per test module, on its own SQLite ledger and pricing file.

A module may set ``PROXY_CONFIG`` (a config path) and ``PROXY_ENV`` (extra
environment) to start its proxy differently, and ``PROXY_SETTLE_ENV`` to replace
``DIRECT_SETTLE_ENV`` (``{}``: the plugin's own defaults).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger import Ledger

from .proxy import CONFIG, DIRECT_SETTLE_ENV, RunningProxy, start_proxy

EXAMPLE_CATALOG = Path(__file__).parents[2] / "examples" / "pricing.yaml"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("proxy")
    shutil.copy(EXAMPLE_CATALOG, path / "pricing.yaml")
    return path


@pytest.fixture(scope="module")
def db_file_url(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'credits.db'}"


@pytest.fixture(scope="module")
def books(db_file_url: str) -> Iterator[Ledger]:
    book = Ledger(db_file_url)
    book.create_schema()
    yield book
    problems = book.audit()
    book.dispose()
    assert problems == [], "ledger audit failed after the e2e tests:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def proxy(
    request: pytest.FixtureRequest, workdir: Path, db_file_url: str, books: Ledger
) -> Iterator[RunningProxy]:
    env = {
        "CREDITS_DATABASE_URL": db_file_url,
        "CREDITS_PRICING_FILE": str(workdir / "pricing.yaml"),
        "CREDITS_CATALOG_RELOAD_SECONDS": "0.3",
        "CREDITS_ACCOUNT_CACHE_SECONDS": "0",
        "CREDITS_UNKNOWN_ACCOUNTS": "refuse",
        # allocations are tested on their own (test_periods); here they would move balances
        "CREDITS_PERIOD_JOB_SECONDS": "0",
        **getattr(request.module, "PROXY_SETTLE_ENV", DIRECT_SETTLE_ENV),
        **getattr(request.module, "PROXY_ENV", {}),
    }
    running = start_proxy(workdir, env, config=getattr(request.module, "PROXY_CONFIG", CONFIG))
    yield running
    running.stop()
