"""ledger: the book of record of litellm-credits (accounts, keys, grants, holds, usage).

``from ledger import Ledger`` is the entry point; everything it returns is a frozen
dataclass from ``ledger.types``. Amounts are integer micro-credits.
"""

from .keys import hash_key
from .service import Ledger
from .types import (
    MICRO_PER_CREDIT,
    Account,
    ApiKey,
    Balance,
    CatalogRowsSnapshot,
    Entry,
    Grant,
    Hold,
    IssuedKey,
    PeriodResult,
    QuotaLike,
    QuotaSpec,
    Settlement,
    Transfer,
    UsageEvent,
    UsageRecord,
    UsageTotals,
    micro_to_credit_str,
)

__all__ = [
    "MICRO_PER_CREDIT",
    "Account",
    "ApiKey",
    "Balance",
    "CatalogRowsSnapshot",
    "Entry",
    "Grant",
    "Hold",
    "IssuedKey",
    "Ledger",
    "PeriodResult",
    "QuotaLike",
    "QuotaSpec",
    "Settlement",
    "Transfer",
    "UsageEvent",
    "UsageRecord",
    "UsageTotals",
    "hash_key",
    "micro_to_credit_str",
]
