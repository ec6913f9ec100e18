"""Rate limits and budgets: per-user calls per minute, per-user and per-tenant daily cost budgets.

Configured per role in `[quotas.roles.<role>]`, per tenant in `[quotas.tenants.<tenant>]`
(see docs/quotas.md). Checked by QuotaMiddleware before every governed call (tools/call,
resources/read, prompts/get, completion/complete), inside TrackingMiddleware: a refused call
is recorded as `denied` with the reason. A refused tool call gets an isError tool result,
the other methods a JSON-RPC error (code BUDGET_OR_RATE_ERROR); both carry which limit, the
current figure, the limit, and how many seconds until the caller may retry.

Reservations: a call admitted under a budget reserves its known price (the per-call price
plus its arguments' tokens) until it ends, so parallel calls see each other: a budget is
never overrun by more than one call's price plus the result tokens of the calls in flight
(docs/quotas.md, "Bounds"). Reservations are per process.

Rate limit: a token bucket per (tenant, user) in this process's memory — N replicas
allow up to N x the rate unless a load balancer pins users to replicas.

Budgets: spend for the current UTC day = today's `gateway.usage_daily` cost (re-read every
`refresh_seconds`) + the cost of this process's calls that were not yet in the database at
that read. The cost of each call is computed when it is recorded, with the same tokenizer
and pricing the writer uses (the writer then reuses the counts), so local and stored
figures agree. No database round-trip on the call path.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

import mcp_types
from fastmcp.server.middleware import Middleware, MiddlewareContext
from fastmcp.tools.base import ToolResult
from mcp.shared.exceptions import MCPError

from auth import Principal
from gateway.config import QuotaConfig, RoleQuota
from gateway.errors import AccessDenied
from gateway.tasks import cancel_and_wait
from gateway.tracking.middleware import COMPLETE, completion_target
from gateway.tracking.pricing import Pricing, arguments_text, count_tokens
from gateway.tracking.records import ToolCalled

if TYPE_CHECKING:
    from gateway.store.db import Database

log = logging.getLogger("mcp_gateway.quotas")

PENDING_MAX = 200_000  # local not-yet-confirmed calls remembered for budgets
ARGUMENT_COUNTS_MAX = 10_000  # argument token counts of calls in flight, kept for their records
BUDGET_OR_RATE_ERROR = -32029  # JSON-RPC error code of a refused resources/read, prompts/get, completion
_ZERO = Decimal(0)  # Decimals are immutable: one zero for every default on the call path


class Reservation(NamedTuple):
    """A call's known price, held against its user's and tenant's budgets while it runs. (Made per budgeted call:
    as immutable as a frozen dataclass, and built without one object.__setattr__ per field.)"""

    tenant_id: str
    user_id: str
    day: date
    amount: Decimal


REFRESH_TIMEOUT = 10.0  # seconds for one refresh of the spend totals (pool checkout and query)


@dataclass(frozen=True, slots=True)
class Limits:
    calls_per_minute: float | None
    burst: int
    user_daily_budget: Decimal | None
    tenant_daily_budget: Decimal | None


class TokenBucket:
    __slots__ = ("accepted", "capacity", "rate", "tokens", "updated")

    def __init__(self, calls_per_minute: float, capacity: int, now: float) -> None:
        self.rate = calls_per_minute / 60.0
        self.capacity = capacity
        self.tokens = float(capacity)
        self.updated = now
        self.accepted: collections.deque[float] = collections.deque()  # for "calls in the last minute"

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        while self.accepted and now - self.accepted[0] >= 60.0:
            self.accepted.popleft()

    def take(self, now: float) -> float:
        """0 if a call may go now (and take its token), else seconds until one may."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.accepted.append(now)
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def recent(self) -> int:
        return len(self.accepted)

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity and not self.accepted


def _dec(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _utc_today() -> date:
    return datetime.now(UTC).date()


def _seconds_to_midnight(now: datetime) -> tuple[int, datetime]:
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return max(1, math.ceil((midnight - now).total_seconds())), midnight


def _usd(value: Decimal) -> str:
    return f"${value.quantize(Decimal('0.0001'))}"


def _fmt_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def quotas_configured(config: QuotaConfig) -> bool:
    """Whether `[quotas]` sets any limit at all (else no Quotas is built and no middleware runs)."""
    return bool(config.roles or config.tenants or config.tenant_daily_budget is not None)


class Quotas:
    """Rate limits and budgets; a Component (gateway.wiring) with a refresh loop for budgets."""

    name = "quotas"

    def __init__(self, config: QuotaConfig, pricing: Pricing, db: Database | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.pricing = pricing
        self.db = db
        self.clock = clock
        self._limits: dict[tuple[str, str], Limits] = {}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        # Budgets: database totals for `_db_day`, plus local spend not yet seen in the database.
        self._db_day: date | None = None
        self._db_user: dict[tuple[str, str], Decimal] = {}
        self._db_tenant: dict[str, Decimal] = {}
        self._pending: dict[uuid.UUID, tuple[str, str, date, Decimal]] = {}
        self._pending_user: dict[tuple[str, str, date], Decimal] = collections.defaultdict(Decimal)
        self._pending_tenant: dict[tuple[str, date], Decimal] = collections.defaultdict(Decimal)
        self._reserved_user: dict[tuple[str, str, date], Decimal] = collections.defaultdict(Decimal)
        self._reserved_tenant: dict[tuple[str, date], Decimal] = collections.defaultdict(Decimal)
        # A budgeted call's arguments are tokenized to price it before it runs; its record, made when it
        # ends, needs the same count. id(arguments) -> (arguments, their text, tokens), until recorded.
        self._argument_tokens: dict[int, tuple[Any, str, int]] = {}
        self.last_refresh: datetime | None = None
        self.last_refresh_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    # -- configuration ----------------------------------------------------------------------------

    @property
    def budgets_enabled(self) -> bool:
        c = self.config
        return (c.tenant_daily_budget is not None
                or any(r.daily_budget is not None for r in c.roles.values())
                or any(t.tenant_daily_budget is not None or any(r.daily_budget is not None for r in t.roles.values())
                       for t in c.tenants.values()))

    def limits_for(self, tenant_id: str, role: str) -> Limits:
        key = (tenant_id, role)
        found = self._limits.get(key)
        if found is not None:
            return found
        base = self.config.roles.get(role) or RoleQuota()  # type: ignore[call-overload]
        tenant = self.config.tenants.get(tenant_id)
        over = (tenant.roles.get(role) if tenant else None) or RoleQuota()  # type: ignore[call-overload]

        def pick(field: str) -> Any:
            value = getattr(over, field)
            return value if value is not None else getattr(base, field)

        cpm = pick("calls_per_minute")
        burst = pick("burst") or (max(1, math.floor(cpm)) if cpm else 1)
        tenant_budget = (tenant.tenant_daily_budget if tenant and tenant.tenant_daily_budget is not None
                         else self.config.tenant_daily_budget)
        found = Limits(cpm, int(burst), _dec(pick("daily_budget")), _dec(tenant_budget))
        if len(self._limits) < 100_000:
            self._limits[key] = found
        return found

    # -- the check --------------------------------------------------------------------------------

    def spent(self, tenant_id: str, user_id: str, today: date | None = None) -> tuple[Decimal, Decimal]:
        """(user, tenant) spend for the UTC day as this process knows it."""
        today = today or _utc_today()
        user = tenant = _ZERO
        if self._db_day == today:
            user = self._db_user.get((tenant_id, user_id), _ZERO)
            tenant = self._db_tenant.get(tenant_id, _ZERO)
        user += self._pending_user.get((tenant_id, user_id, today), _ZERO)
        tenant += self._pending_tenant.get((tenant_id, today), _ZERO)
        return user, tenant

    def reserved(self, tenant_id: str, user_id: str, today: date) -> tuple[Decimal, Decimal]:
        """(user, tenant) prices held by this process's calls in flight."""
        return (self._reserved_user.get((tenant_id, user_id, today), _ZERO),
                self._reserved_tenant.get((tenant_id, today), _ZERO))

    def budgeted(self, principal: Principal) -> bool:
        limits = self.limits_for(principal.tenant_id, principal.role)
        return limits.user_daily_budget is not None or limits.tenant_daily_budget is not None

    def check(self, principal: Principal) -> tuple[str, dict[str, Any]] | None:
        """None if the call may go (a rate token is taken), else (reason, details). Reserves nothing."""
        return self.admit(principal)[0]

    def admit(self, principal: Principal, price: Decimal = _ZERO
              ) -> tuple[tuple[str, dict[str, Any]] | None, Reservation | None]:
        """(None, reservation) if the call may go — a rate token is taken and `price` is held against the
        budgets until `release` — else ((reason, details), None).

        A budget refuses once spend + the prices held by calls in flight reaches it, so parallel calls
        cannot all pass a check that none of them has paid for yet."""
        limits = self.limits_for(principal.tenant_id, principal.role)
        today: date | None = None
        if limits.user_daily_budget is not None or limits.tenant_daily_budget is not None:
            now = datetime.now(UTC)
            today = now.date()
            user_spent, tenant_spent = self.spent(principal.tenant_id, principal.user_id, today)
            user_held, tenant_held = self.reserved(principal.tenant_id, principal.user_id, today)
            for scope, limit_name, spent, limit in (
                    ("user", "user_daily_budget", user_spent + user_held, limits.user_daily_budget),
                    ("tenant", "tenant_daily_budget", tenant_spent + tenant_held, limits.tenant_daily_budget)):
                if limit is not None and spent >= limit:
                    seconds, resets_at = _seconds_to_midnight(now)
                    return (f"{limit_name} exceeded: {scope} spent {_usd(spent)} of {_usd(limit)} today (UTC)",
                            {"error": "budget_exceeded", "limit": limit_name, "scope": scope,
                             "current": float(spent), "limit_value": float(limit), "unit": "USD",
                             "retry_after_seconds": seconds, "resets_at": resets_at.isoformat()}), None
        if limits.calls_per_minute is not None:
            key = (principal.tenant_id, principal.user_id)
            now_mono = self.clock()
            bucket = self._buckets.get(key)
            if bucket is None or bucket.rate != limits.calls_per_minute / 60.0 or bucket.capacity != limits.burst:
                bucket = self._buckets[key] = TokenBucket(limits.calls_per_minute, limits.burst, now_mono)
            wait = bucket.take(now_mono)
            if wait > 0:
                retry = math.ceil(wait * 10) / 10  # tenths, rounded up: retrying then succeeds
                return ((f"calls_per_minute exceeded: user made {bucket.recent()} calls in the last minute,"
                         f" limit {limits.calls_per_minute:g}/min (burst {limits.burst})"),
                        {"error": "rate_limited", "limit": "calls_per_minute", "scope": "user",
                         "current": bucket.recent(), "limit_value": limits.calls_per_minute,
                         "burst": limits.burst, "unit": "calls/minute", "retry_after_seconds": retry}), None
        if today is None or price <= 0:
            return None, None
        reservation = Reservation(principal.tenant_id, principal.user_id, today, price)
        self._reserved_user[(reservation.tenant_id, reservation.user_id, today)] += price
        self._reserved_tenant[(reservation.tenant_id, today)] += price
        return None, reservation

    def release(self, reservation: Reservation | None) -> None:
        """The call ended: its held price goes (its actual cost arrives through `on_recorded`)."""
        if reservation is None:
            return
        self._dec_key(self._reserved_user, (reservation.tenant_id, reservation.user_id, reservation.day),
                      reservation.amount)
        self._dec_key(self._reserved_tenant, (reservation.tenant_id, reservation.day), reservation.amount)

    def price_of(self, name: str | None, arguments: Any) -> Decimal:
        """What a call is known to cost before it runs: its per-call price and its arguments' tokens."""
        if not arguments:
            return self.pricing.cost(name, 0, 0)
        text = arguments_text(arguments)
        tokens = count_tokens(text)
        if len(self._argument_tokens) >= ARGUMENT_COUNTS_MAX:
            self._argument_tokens.clear()  # calls whose record never came (tracking failed): bounded
        self._argument_tokens[id(arguments)] = (arguments, text, tokens)
        return self.pricing.cost(name, 0, tokens)

    def _arguments_tokens(self, arguments: Any) -> int:
        """The count `price_of` made for these very arguments, unchanged since; else a new count."""
        kept = self._argument_tokens.pop(id(arguments), None)
        text = arguments_text(arguments)
        if kept is not None and kept[0] is arguments and kept[1] == text:
            return kept[2]
        return count_tokens(text)

    # -- spend accounting ---------------------------------------------------------------------------

    def on_recorded(self, record: ToolCalled) -> None:
        """Tracker hook: count the call's cost now (same tokenizer and prices as the writer)."""
        if record.completion_tokens is None:
            record.completion_tokens = self._arguments_tokens(record.arguments)
        if record.prompt_tokens is None:
            record.prompt_tokens = count_tokens(record.result_text)
        cost = self.pricing.cost_of(record)
        if cost <= 0 or len(self._pending) >= PENDING_MAX:
            return
        day = record.at.astimezone(UTC).date()
        self._pending[record.id] = (record.tenant_id, record.user_id, day, cost)
        self._pending_user[(record.tenant_id, record.user_id, day)] += cost
        self._pending_tenant[(record.tenant_id, day)] += cost

    def _confirmed(self, ids: set[uuid.UUID]) -> None:
        for record_id in ids:
            entry = self._pending.pop(record_id, None)
            if entry is None:
                continue
            tenant_id, user_id, day, cost = entry
            self._dec_key(self._pending_user, (tenant_id, user_id, day), cost)
            self._dec_key(self._pending_tenant, (tenant_id, day), cost)

    @staticmethod
    def _dec_key(table: dict[Any, Decimal], key: Any, cost: Decimal) -> None:
        left = table.get(key, _ZERO) - cost
        if left <= 0:
            table.pop(key, None)
        else:
            table[key] = left

    async def refresh(self) -> None:
        """Re-read today's totals, and which local calls they already include, in one snapshot."""
        if self.db is None:
            return
        today = _utc_today()
        pending_ids = list(self._pending)
        user: dict[tuple[str, str], Decimal] = {}
        tenant: dict[str, Decimal] = {}
        confirmed: set[uuid.UUID] = set()
        # Bounded: a locked table must not hold a pooled connection (and stall the refresh loop) for ever.
        async with self.db.as_system("ingest", timeout=REFRESH_TIMEOUT) as conn:
            # One statement, one snapshot: a flush committing meanwhile is either in both parts or in neither.
            cur = await conn.execute(
                "SELECT tenant_id, CASE WHEN GROUPING(user_id) = 1 THEN NULL ELSE user_id END, sum(cost), NULL::uuid"
                " FROM gateway.usage_daily WHERE day = %s"
                " GROUP BY GROUPING SETS ((tenant_id, user_id), (tenant_id))"
                " UNION ALL"
                " SELECT NULL, NULL, NULL, r.id FROM gateway.mcp_requests r"
                " JOIN unnest(%s::text[], %s::uuid[]) AS p(tenant_id, id) USING (tenant_id, id)",
                (today, [self._pending[i][0] for i in pending_ids], pending_ids))
            for tenant_id, user_id, cost, request_id in await cur.fetchall():
                if request_id is not None:
                    confirmed.add(request_id)
                elif user_id is None:
                    tenant[tenant_id] = Decimal(cost)
                else:
                    user[(tenant_id, user_id)] = Decimal(cost)
        self._db_day, self._db_user, self._db_tenant = today, user, tenant
        self._confirmed(confirmed)
        # Yesterday's local spend no longer matters once it is confirmed or the day is over.
        for record_id, (_, _, day, _) in list(self._pending.items()):
            if day < today - timedelta(days=1):
                self._confirmed({record_id})
        self.last_refresh = datetime.now(UTC)
        self.last_refresh_error = None

    def _sweep_buckets(self) -> None:
        now = self.clock()
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_seconds)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database away: keep the last totals plus local spend
                if self.last_refresh_error is None:
                    log.warning("quotas: cannot refresh spend totals (%s); using the last totals plus local spend",
                                type(exc).__name__)
                self.last_refresh_error = f"{type(exc).__name__}: {exc}"[:200]
            self._sweep_buckets()

    async def start(self) -> None:
        if self.budgets_enabled and self.db is not None:
            try:  # the first totals before serving, if the database answers quickly
                await asyncio.wait_for(self.refresh(), timeout=5.0)
            except Exception as exc:
                log.warning("quotas: no spend totals at start (%s); the refresh keeps trying", type(exc).__name__)
            self._task = asyncio.create_task(self._loop(), name="mcp-gateway-quotas")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def ready(self) -> dict[str, Any]:
        return {"budgets": self.budgets_enabled,
                "last_refresh": self.last_refresh.isoformat() if self.last_refresh else None,
                "last_refresh_error": self.last_refresh_error}


def limit_result(reason: str, details: dict[str, Any]) -> ToolResult:
    """The isError tool result a refused call gets: the same facts in text and structured content."""
    retry = details["retry_after_seconds"]
    if details["error"] == "rate_limited":
        text = (f"Rate limit exceeded ({details['limit']}, per user): {details['current']} calls in the last"
                f" minute, limit {details['limit_value']:g} per minute (burst {details['burst']})."
                f" Retry in {_fmt_seconds(retry)} (retry_after_seconds={retry}).")
    else:
        text = (f"Daily budget exceeded ({details['limit']}): the {details['scope']} has spent"
                f" ${details['current']:.4f} of ${details['limit_value']:.4f} today (UTC)."
                f" It resets at {details['resets_at']}, in {_fmt_seconds(retry)} (retry_after_seconds={retry}).")
    return ToolResult(content=[mcp_types.TextContent(type="text", text=text)],
                      structured_content={**details, "message": text}, is_error=True)


def limit_error(reason: str, details: dict[str, Any]) -> MCPError:
    """What a refused resources/read, prompts/get or completion gets: a JSON-RPC error, same facts."""
    text = limit_result(reason, details).content[0].text  # type: ignore[union-attr]
    return MCPError(BUDGET_OR_RATE_ERROR, text, {**details, "message": text})


class QuotaMiddleware(Middleware):
    """Refuses governed calls over a rate limit or budget; holds a budgeted call's known price while it
    runs. Runs inside TrackingMiddleware, whose record (on_recorded) takes over the spend when it ends."""

    def __init__(self, quotas: Quotas, principal_of: Callable[[], Principal | None]) -> None:
        self.quotas = quotas
        self.principal_of = principal_of

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        message = context.message
        return await self._govern(context, call_next, message.name, message.arguments, as_result=True)

    async def on_read_resource(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        return await self._govern(context, call_next, str(context.message.uri), None, as_result=False)

    async def on_get_prompt(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        message = context.message
        return await self._govern(context, call_next, message.name, message.arguments, as_result=False)

    async def on_request(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        if context.method != COMPLETE:
            return await call_next(context)
        name, argument = completion_target(context.message)
        return await self._govern(context, call_next, name, argument, as_result=False)

    async def _govern(self, context: MiddlewareContext[Any], call_next: Any, name: str | None, arguments: Any,
                      *, as_result: bool) -> Any:
        principal = self.principal_of()
        if principal is None:  # nobody to attribute a quota to (in-memory transport)
            return await call_next(context)
        price = self.quotas.price_of(name, arguments) if self.quotas.budgeted(principal) else _ZERO
        refused, reservation = self.quotas.admit(principal, price)
        if refused is not None:
            reason, details = refused
            if as_result:
                raise AccessDenied(reason, result=limit_result(reason, details))
            raise AccessDenied(reason, public=limit_error(reason, details))
        try:
            return await call_next(context)
        finally:
            # No await between here and the tracker's record: other calls never see the spend missing.
            self.quotas.release(reservation)

