"""The credit gate: hold before a call, charge once after it, release on failure.

This is the service layer between LiteLLM's hooks (``handler``) and the two
domain packages: it resolves the paying account, asks ``pricing`` for the
worst case and the price, and asks ``ledger`` to hold, settle or void. Ledger
calls are blocking SQLAlchemy work, so they run on a small thread pool and
never stall the proxy's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from ledger import Account, Balance, Hold, Ledger, Settlement, UsageRecord, UsageTotals
from ledger.escrow import EscrowBook
from ledger.escrow_lease import LeasedBook
from ledger.ids import new_hold_id
from ledger.journal import SettleJournal
from ledger.journal_loop import LoopRecorder
from ledger.outbox import Outbox, PendingCharge
from pricing import (
    Priced,
    QuotaCheck,
    Tier,
    check_access,
    credits_to_micro,
    enforce_max_tokens,
    micro_to_credits,
    period_bounds,
    price,
    quota_checks,
    quote,
)
from pricing.errors import AccountInactive, BillingUnavailable, CreditsError, HoldNotFound, UnknownAccount

from .catalog_source import CatalogSource
from .identity import Caller, Identity
from .outage import OfflineBook
from .outcome import Outcome
from .settings import CreditSettings, OutagePolicy, UnknownAccountPolicy
from .worst_case import MAX_MODEL_NAME, DeploymentIndex, WorstCase, check_request, max_tokens_key, worst_cases

log = logging.getLogger("credits.gate")
T = TypeVar("T")

_SETTLED_MEMORY = 4096  # recent settlements kept for the headers hook and duplicate events
# a balance or usage read waits this long at most for the journal to reach the ledger
# (longer only while the ledger is down, and then the read would fail anyway)
_READ_FLUSH_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class CallContext:
    """What pricing needs to know about the account at the time of a call."""

    byok: bool = False
    period_spend_usd: Decimal = Decimal(0)
    byok_period_cost_usd: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class OpenCall:
    hold_id: str
    account_id: int
    tier: str
    caller: Caller
    quoted: Priced
    opened_at: float
    context: CallContext = CallContext()
    quotas: tuple[QuotaCheck, ...] = ()
    # served while the ledger was unreachable (fail-open): no hold exists in the ledger
    offline: bool = False
    available_after: int | None = None  # the account's available credit once the hold was placed
    balance_after: int | None = None
    # the call's credit was lent from an escrow hold (``ledger.escrow``), not held alone
    loan: Hold | None = None

    @property
    def escrow_hold_id(self) -> str | None:
        return self.loan.escrow_hold_id if self.loan is not None else None

    @property
    def held(self) -> int:
        return self.quoted.micro_credits


def _utcnow() -> datetime:
    return datetime.now(UTC)


def limit_max_tokens(tier: Tier, call_type: str, data: dict[str, Any]) -> None:
    """Apply the tier's per-request token cap to the request itself (clamp) or refuse it."""
    key = max_tokens_key(call_type, data)
    if key is None:
        return
    asked = data.get(key)
    requested = asked if isinstance(asked, int) and not isinstance(asked, bool) and asked >= 0 else None
    allowed = enforce_max_tokens(tier, requested)
    if allowed is not None and allowed != requested:
        data[key] = allowed


class CreditGate:
    def __init__(
        self,
        settings: CreditSettings,
        catalogs: CatalogSource,
        ledger: Ledger,
        outbox: Outbox,
        clock: Callable[[], datetime] | None = None,
        *,
        journal: SettleJournal | None = None,
        escrow: EscrowBook | LeasedBook | None = None,
    ) -> None:
        """``journal``: charges are durable in it before a response ends and reach the
        ledger in batches. ``escrow``: rich accounts' calls borrow credit from an escrow
        hold through Redis instead of a hold each."""
        self.settings = settings
        self.journal = journal
        self.escrow = escrow
        self.clock: Callable[[], datetime] = clock or _utcnow
        self._spend: dict[int, tuple[float, UsageTotals]] = {}
        self.catalogs = catalogs
        self.ledger = ledger
        self.outbox = outbox
        self.deployments = DeploymentIndex()
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="credits-ledger")
        # durable before a response ends; on the loop or off it, as the disk's speed allows
        self._recorder = LoopRecorder(journal, self._pool) if journal is not None else None
        self._accounts: dict[Identity | int, tuple[float, Account]] = {}
        self._open: dict[str, OpenCall] = {}
        self._settled: OrderedDict[str, Settlement] = OrderedDict()
        # streams waiting for their charge to reach disk before the client sees the end
        self._landed: dict[str, asyncio.Event] = {}
        self._settling: dict[str, asyncio.Future[Settlement | None]] = {}
        self.offline = OfflineBook(
            settings.outage_policy is OutagePolicy.FAIL_OPEN,
            credits_to_micro(settings.fail_open_exposure_credits),
        )

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    # -- who pays -------------------------------------------------------------

    async def account_for(self, caller: Caller) -> Account:
        cache_key: Identity | int | None = caller.bound_account_id or caller.identity
        if cache_key is None:
            raise UnknownAccount("a key without a user, team, end user or key id")
        hit = self._accounts.get(cache_key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        try:
            account = await self.run(self._load_account, caller)
        except BillingUnavailable:
            if hit is None or not self.offline.enabled:
                raise
            return hit[1]  # fail-open: the last known tier and status stand in
        self._accounts[cache_key] = (time.monotonic() + self.settings.account_cache_seconds, account)
        return account

    def _load_account(self, caller: Caller) -> Account:
        if caller.bound_account_id is not None:
            return self.ledger.get_account(caller.bound_account_id)
        identity = caller.identity
        assert identity is not None
        found = self.ledger.find_account(identity.kind, identity.external_id)
        if found is not None:
            return found
        if self.settings.unknown_accounts is UnknownAccountPolicy.REFUSE:
            raise UnknownAccount(str(identity))
        welcome = credits_to_micro(self.settings.welcome_credits) if self.settings.welcome_credits else 0
        log.info("provisioning account %s on tier %s", identity, self.settings.default_tier)
        return self.ledger.open_account(
            identity.kind, identity.external_id, tier=self.settings.default_tier, welcome_micro=welcome
        )

    def forget_account(self, caller: Caller) -> None:
        self._accounts.pop(caller.bound_account_id or caller.identity or 0, None)

    # -- before the call --------------------------------------------------------

    def worst_price(
        self, tier: str, model_group: str, cases: list[WorstCase], now: datetime, context: CallContext
    ) -> Priced:
        catalog = self.catalogs.current
        priced: list[Priced] = []
        for case in (self._bounded(c, model_group) for c in cases):
            if case.rates is not None:
                priced.append(
                    quote(
                        catalog,
                        tier=tier,
                        model=model_group,
                        provider=case.provider,
                        rates=case.rates,
                        prompt_tokens=case.prompt_tokens,
                        max_tokens=case.max_tokens,
                        now=now,
                        period_spend_usd=context.period_spend_usd,
                        byok=context.byok,
                        byok_month_cost_usd=context.byok_period_cost_usd,
                    )
                )
            else:
                priced.append(
                    price(
                        catalog,
                        tier=tier,
                        model=model_group,
                        provider=case.provider,
                        cost_usd=case.cost_usd or Decimal(0),
                        input_tokens=0,
                        output_tokens=0,
                        now=now,
                        period_spend_usd=context.period_spend_usd,
                        byok=context.byok,
                        byok_month_cost_usd=context.byok_period_cost_usd,
                    )
                )
        return max(priced, key=lambda p: p.micro_credits)

    def _bounded(self, case: WorstCase, model_group: str) -> WorstCase:
        """A model nobody can price (not in LiteLLM's map nor the catalog) is held at the fallback.

        Its worst case would otherwise be zero, and a zero hold lets any account call it;
        a model the catalog declares free keeps its zero.
        """
        rates, catalog = case.rates, self.catalogs.current
        if rates is None or rates.input_per_token or rates.output_per_token or model_group in catalog.models:
            return case
        if catalog.free_models is not None and catalog.free_models.matches(model_group):
            return case
        return WorstCase(case.provider, 0, 0, None, self.settings.fallback_hold_usd)

    async def admit(self, caller: Caller, model_group: str, call_type: str, data: dict[str, Any]) -> OpenCall:
        """Check access, limits and quotas and place the worst-case hold; raises a ``RequestRejected``."""
        check_request(call_type, model_group, data, self.deployments)
        now = self.clock()
        account = await self.account_for(caller)
        if account.status != "active":
            self.forget_account(caller)  # a reactivation must be seen on the next call
            raise AccountInactive(account.label, account.status)
        catalog = self.catalogs.current
        tier = catalog.tier(account.tier)
        groups = self.deployments.groups(model_group)
        check_access(catalog, account.tier, model_group, groups=groups)
        limit_max_tokens(tier, call_type, data)
        try:
            context = await self.context_for(account, caller, now)
        except BillingUnavailable:
            if not self.offline.enabled:
                raise
            context = CallContext(byok=account.byok or caller.byok)
        cases = worst_cases(self.deployments, call_type, model_group, data, self.settings.fallback_hold_usd)
        quoted = self.worst_price(account.tier, model_group, cases, now, context)
        anchor = account.period_anchor or account.created_at
        quotas = tuple(quota_checks(tier, model_group, anchor=anchor, now=now, groups=groups))
        try:
            hold = await self._hold(account, model_group, quoted, quotas)
        except BillingUnavailable:
            # fail-open (or a 503): served unheld, within this account's exposure cap
            self.offline.admit(account.id, quoted.micro_credits)
            log.warning("ledger unreachable: %s served without a hold (fail-open)", account.label)
            call = OpenCall(
                new_hold_id(),
                account.id,
                account.tier,
                caller,
                quoted,
                time.monotonic(),
                context,
                (),
                True,
            )
        else:
            call = OpenCall(
                hold.id,
                account.id,
                account.tier,
                caller,
                quoted,
                time.monotonic(),
                context,
                quotas,
                available_after=hold.available_after,
                balance_after=hold.balance_after,
                loan=hold if hold.escrow_hold_id is not None else None,
            )
        self._open[call.hold_id] = call
        return call

    async def _hold(
        self, account: Account, model_group: str, quoted: Priced, quotas: tuple[QuotaCheck, ...]
    ) -> Hold:
        if quotas:
            await self.run(self.ledger.consume_quotas, account.id, quotas)
        try:
            if self.escrow is not None:
                reference = model_group[:MAX_MODEL_NAME]
                # from process memory without leaving the loop; else off it (Redis, a refill)
                lent = self.escrow.lend_now(account.id, quoted.micro_credits, reference=reference)
                if lent is None:
                    lent = await self.run(
                        self.escrow.lend, account.id, quoted.micro_credits, reference=reference
                    )
                if lent is not None:
                    return lent
            hold = await self.run(
                self.ledger.hold,
                account.id,
                quoted.micro_credits,
                ttl_seconds=self.settings.hold_ttl_seconds,
                reference=model_group[:MAX_MODEL_NAME],
            )
        except BaseException:
            if quotas:
                try:
                    await self.run(self.ledger.release_quotas, account.id, quotas)
                except CreditsError as exc:
                    log.error("quota slots of %s not given back: %s", account.label, exc)
            raise
        return hold

    async def context_for(self, account: Account, caller: Caller | None, now: datetime) -> CallContext:
        byok = account.byok or (caller is not None and caller.byok)
        catalog = self.catalogs.current
        if not catalog.volume_discounts and not byok:
            return CallContext(byok=byok)  # no rule reads the spend: skip the query
        totals = await self._period_totals(account, now)
        return CallContext(byok, totals.provider_cost_usd, totals.byok_provider_cost_usd)

    async def _period_totals(self, account: Account, now: datetime) -> UsageTotals:
        hit = self._spend.get(account.id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        start, _ = period_bounds(account.period_anchor or account.created_at, now)
        totals = await self.run(self.ledger.period_usage_totals, account.id, start)
        self._spend[account.id] = (time.monotonic() + self.settings.spend_cache_seconds, totals)
        return totals

    # -- after the call ---------------------------------------------------------

    def settled(self, hold_id: str) -> Settlement | None:
        return self._settled.get(hold_id)

    def is_open(self, hold_id: str) -> bool:
        """True while this process holds the call it admitted under ``hold_id``."""
        return hold_id in self._open

    async def settle(self, outcome: Outcome, caller: Caller | None = None) -> Settlement | None:
        """Charge the call once. A charge the ledger refuses goes to the outbox, never nowhere.

        LiteLLM starts the success event before the post-call hook of the same call,
        so both arrive here together: the second waits for the first instead of
        asking the ledger again (the ledger would refuse a second charge anyway, but
        only after a transaction of its own).
        """
        done = self._settled.get(outcome.hold_id)
        if done is not None:
            return done
        running = self._settling.get(outcome.hold_id)
        if running is not None:
            return await asyncio.shield(running)
        task = asyncio.ensure_future(self._settle_once(outcome, caller))
        self._settling[outcome.hold_id] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._settling.pop(outcome.hold_id, None)
            else:
                task.add_done_callback(lambda _: self._settling.pop(outcome.hold_id, None))

    async def _settle_once(self, outcome: Outcome, caller: Caller | None) -> Settlement | None:
        call = self._open.get(outcome.hold_id)
        if call is not None:
            tier, account_id, context = call.tier, call.account_id, call.context
            caller = call.caller
        else:
            # a hold opened by another process (or before a restart): the ledger knows whose it is
            hold = await self.run(self.ledger.get_hold, outcome.hold_id)
            account = await self.run(self.ledger.get_account, hold.account_id)
            tier, account_id = account.tier, account.id
            context = await self.context_for(account, caller, self.clock())
        catalog = self.catalogs.current
        priced = price(
            catalog,
            tier=tier,
            model=outcome.model_group,
            provider=outcome.provider,
            cost_usd=outcome.cost_usd,
            input_tokens=outcome.tokens_in,
            output_tokens=outcome.tokens_out,
            cache_hit=outcome.cache_hit,
            now=self.clock(),
            period_spend_usd=context.period_spend_usd,
            byok=context.byok,
            byok_month_cost_usd=context.byok_period_cost_usd,
        )
        usage = UsageRecord(
            model=outcome.model_group,
            provider=outcome.provider,
            call_type=outcome.call_type,
            api_key_hash=caller.api_key_hash if caller else None,
            user_id=caller.user_id if caller else None,
            team_id=caller.team_id if caller else None,
            end_user_id=caller.end_user_id if caller else None,
            tokens_in=outcome.tokens_in,
            tokens_out=outcome.tokens_out,
            provider_cost_usd=outcome.cost_usd,
            markup_rule=priced.rule_id,
            catalog_version=catalog.version,
            cache_hit=outcome.cache_hit,
            stream=outcome.stream,
            byok=context.byok,
        )
        offline = call is not None and call.offline
        escrow_id = call.escrow_hold_id if call is not None else None
        pending = PendingCharge(
            outcome.hold_id, priced.micro_credits, usage, account_id=account_id, escrow_hold_id=escrow_id
        )
        try:
            if self._recorder is not None and call is not None and not call.offline:
                # alone: no other call of this process is between its pre-call and its charge
                await self._recorder.record(pending, alone=len(self._open) == 1)
                settlement = self._estimate(pending, call)
            else:
                settlement = await self.run(self._charge, pending, call)
        except Exception as exc:
            # LiteLLM would swallow this: park the charge on disk and shout
            await self.run(self.outbox.append, pending)
            if call is not None and offline:
                self.offline.finished(account_id, call.quoted.micro_credits, priced.micro_credits)
            log.critical(
                "CHARGE NOT WRITTEN, kept in outbox %s for retry: hold=%s account=%s credits=%s: %s",
                self.outbox.path,
                outcome.hold_id,
                account_id,
                micro_to_credits(priced.micro_credits),
                exc,
            )
            self._mark_landed(outcome.hold_id)
            return None
        self._remember(settlement)
        self._open.pop(outcome.hold_id, None)
        if call is not None and call.loan is not None:
            await self._give_back(call.loan, priced.micro_credits)
        if call is not None and offline:
            self.offline.finished(account_id, call.quoted.micro_credits, 0)
        self._mark_landed(outcome.hold_id)
        return settlement

    def _charge(self, pending: PendingCharge, call: OpenCall | None) -> Settlement:
        """Write one call's charge to the ledger (not journaled: offline or another process's hold)."""
        account_id = pending.account_id
        assert account_id is not None
        if call is not None and call.offline:
            return self.ledger.settle_unheld(pending.hold_id, account_id, pending.micro, pending.usage)
        if pending.escrow_hold_id is not None:
            return self.ledger.settle_escrowed(
                pending.hold_id, pending.escrow_hold_id, account_id, pending.micro, pending.usage
            )
        try:
            return self.ledger.settle(pending.hold_id, pending.micro, pending.usage)
        except HoldNotFound:
            # placed with an async commit that a database crash lost: charge it all the same
            return self.ledger.settle_unheld(pending.hold_id, account_id, pending.micro, pending.usage)

    def _estimate(self, pending: PendingCharge, call: OpenCall) -> Settlement:
        """What the settlement will say once the journal applies it (for the headers)."""
        released = call.held - pending.micro
        available = call.available_after + released if call.available_after is not None else 0
        balance = call.balance_after - pending.micro if call.balance_after is not None else 0
        return Settlement(
            hold_id=pending.hold_id,
            account_id=call.account_id,
            held=call.held,
            charged=pending.micro,
            usage_event_id=0,
            late=False,
            settled_at=self.clock(),
            balance_after=balance,
            available_after=available,
            journaled=True,
        )

    async def _give_back(self, loan: Hold, micro_used: int) -> None:
        if self.escrow is not None and not self.escrow.give_back_now(loan, micro_used):
            await self.run(self.escrow.give_back, loan, micro_used)

    def _mark_landed(self, hold_id: str) -> None:
        event = self._landed.pop(hold_id, None)
        if event is not None:
            event.set()

    async def wait_landed(self, hold_id: str, timeout: float) -> bool:
        """Wait until this hold's charge is on disk (ledger or outbox); False on timeout."""
        if hold_id in self._settled:
            return True
        event = self._landed.setdefault(hold_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except TimeoutError:
            self._landed.pop(hold_id, None)
            return False

    def _remember(self, settlement: Settlement) -> None:
        self._settled[settlement.hold_id] = settlement
        while len(self._settled) > _SETTLED_MEMORY:
            self._settled.popitem(last=False)

    async def release(self, hold_id: str, reason: str) -> bool:
        """Void a hold whose call failed; repeated calls (failure event + failure hook) are harmless."""
        if hold_id in self._settled:
            return False
        call = self._open.pop(hold_id, None)
        if call is not None and call.offline:
            self.offline.finished(call.account_id, call.quoted.micro_credits, 0)
            return True  # nothing was held in the ledger
        if call is not None and call.loan is not None:
            # lent from an escrow: the credit goes back to it, no ledger write
            await self._give_back(call.loan, 0)
            if call.quotas:
                await self.run(self.ledger.release_quotas, call.account_id, call.quotas)
            return True
        try:
            voided = await self.run(self.ledger.void, hold_id, reason)
            # quotas count served calls: a failed one gives its slot back, once
            if voided and call is not None and call.quotas:
                await self.run(self.ledger.release_quotas, call.account_id, call.quotas)
            return voided
        except CreditsError as exc:
            # the sweeper voids it when its TTL runs out
            log.error("hold %s not released now (%s); the sweeper will", hold_id, exc)
            return False

    async def renew(self, hold_id: str) -> None:
        """Keep a long stream's hold from expiring under it."""
        call = self._open.get(hold_id)
        if call is None or call.offline or call.escrow_hold_id is not None:
            return  # an escrow is renewed by its book
        try:
            await self.run(self.ledger.renew_hold, hold_id, self.settings.hold_ttl_seconds)
        except CreditsError as exc:
            log.error("hold %s not renewed: %s", hold_id, exc)

    async def available(self, hold_id: str | None, account_id: int) -> int:
        """The account's available credit for the response headers, read only when not already known."""
        if hold_id is not None:
            settlement = self._settled.get(hold_id)
            if settlement is not None:
                return settlement.available_after
            call = self._open.get(hold_id)
            if call is not None and call.available_after is not None:
                return call.available_after
        return (await self._unlent_as_available(await self.balance(account_id))).available

    async def balance(self, account_id: int) -> Balance:
        return await self.run(self.ledger.balance, account_id)

    async def shown_balance(self, account_id: int) -> Balance:
        """The balance a person reads: this process's journaled charges applied first, and
        its escrow's unlent credit counted as available, not held (as the headers do)."""
        await self.flush_charges()
        return await self._unlent_as_available(await self.balance(account_id))

    async def _unlent_as_available(self, balance: Balance) -> Balance:
        if self.escrow is None:
            return balance
        unlent = max(0, await self.run(self.escrow.unlent, balance.account_id))
        if not unlent:
            return balance
        return replace(balance, held=balance.held - unlent, available=balance.available + unlent)

    async def flush_charges(self) -> None:
        """Read your own writes through this proxy: a route about to read the ledger waits
        (briefly) for the charges this process has journaled to be applied to it."""
        if self.journal is not None and not await self.run(self.journal.flush, _READ_FLUSH_SECONDS):
            log.warning(
                "journaled charges not yet in the ledger after %ss: read as it is", _READ_FLUSH_SECONDS
            )

    # -- housekeeping -----------------------------------------------------------

    def sweep_memory(self) -> None:
        horizon = time.monotonic() - self.settings.hold_ttl_seconds
        for hold_id in [h for h, c in self._open.items() if c.opened_at < horizon]:
            self._open.pop(hold_id, None)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
