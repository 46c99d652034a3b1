"""``Ledger``: the facade every other package uses. One transaction per method.

Its methods live by subject in ``service_*`` modules (``service_base``: engines,
lifecycle, reads; ``service_accounts``; ``service_money``; ``service_calls``;
``service_catalog``); this class only puts them together.
"""

from __future__ import annotations

from .service_accounts import AccountsService
from .service_calls import CallsService
from .service_catalog import CatalogService


class Ledger(AccountsService, CallsService, CatalogService):
    """The book of record: accounts, keys, grants, holds, charges and usage.

    Synchronous and thread-safe (one pooled connection per call); async code calls it
    through ``asyncio.to_thread``. Database outages surface as ``BillingUnavailable``.
    """
