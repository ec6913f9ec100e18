"""Usage over time and per-tool latency: the dashboard's questions, answered under row-level security.

- `daily_series`: calls and cost per UTC day, one series per user or tool (the biggest few, the
  rest summed as "other"), every day of the range present (zeros where nothing happened). Read
  from the `gateway.usage_daily` rollup, like the cost reports (gateway/store/reports.py), so the
  numbers add up to the same totals.
- `tool_stats`: per tool, calls by status and p50/p95/max latency; percentiles need the raw
  durations, so this reads `gateway.mcp_requests` (denied calls excluded from the latency:
  they never ran). `top_errors`: the most frequent error / denied messages.

Every query runs inside `Database.as_principal`: members see themselves, tenant admins their
tenant, auditors everything; the tenant/user arguments only narrow further.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from psycopg.rows import dict_row

from auth import Principal
from gateway.store.db import Database
from gateway.store.reports import ReportError, resolve_range

StackBy = Literal["user", "tool"]
MAX_DAYS = 366
MAX_SERIES = 8
OTHER = "(other)"
_CENTS = Decimal("0.00000001")


@dataclass(frozen=True)
class Scope:
    """Who asks, for which UTC days (inclusive), narrowed to a tenant / user when given."""

    principal: Principal
    since: date
    until: date
    tenant_id: str | None = None
    user_id: str | None = None

    def where(self, day_column: str) -> tuple[str, dict[str, Any]]:
        clauses = [f"{day_column} >= %(since)s", f"{day_column} < %(until_next)s"]
        if self.tenant_id is not None:
            clauses.append("tenant_id = %(tenant_id)s")
        if self.user_id is not None:
            clauses.append("user_id = %(user_id)s")
        return " AND ".join(clauses), {"since": self.since, "until_next": self.until + timedelta(days=1),
                                       "tenant_id": self.tenant_id, "user_id": self.user_id}


def scope(principal: Principal, since: str | None, until: str | None, tenant_id: str | None = None,
          user_id: str | None = None, *, default_since: str = "6d", now: datetime | None = None) -> Scope:
    first, last = resolve_range(since if since is not None else default_since, until, now=now)
    if (last - first).days + 1 > MAX_DAYS:
        raise ReportError("since", f"since: at most {MAX_DAYS} days per request, got {(last - first).days + 1}")
    return Scope(principal, first, last, tenant_id, user_id)


def _money(value: Any) -> str:
    return str(Decimal(value or 0).quantize(_CENTS))


async def daily_series(db: Database, s: Scope, stack_by: StackBy) -> dict[str, Any]:
    where, params = s.where("day")
    key = "tenant_id || '/' || user_id" if stack_by == "user" else "tool_name"
    query = (f"SELECT day, {key} AS key, tenant_id, user_id, tool_name, sum(calls)::bigint AS calls,"
             " sum(errors)::bigint AS errors, sum(denied)::bigint AS denied, sum(cost)::numeric(20, 8) AS cost"
             f" FROM gateway.usage_daily WHERE {where} GROUP BY day, tenant_id, user_id, tool_name")
    async with db.as_principal(s.principal) as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(query, params)
        rows = await cur.fetchall()
    days = [s.since + timedelta(days=i) for i in range((s.until - s.since).days + 1)]
    index = {d: i for i, d in enumerate(days)}
    per_key: dict[str, dict[str, Any]] = {}
    for r in rows:
        k = r["key"]
        entry = per_key.setdefault(k, {
            "key": k, "tenant_id": r["tenant_id"] if stack_by == "user" else None,
            "user_id": r["user_id"] if stack_by == "user" else None,
            "tool_name": r["tool_name"] if stack_by == "tool" else None,
            "calls": [0] * len(days), "errors": [0] * len(days), "denied": [0] * len(days),
            "cost": [Decimal(0)] * len(days)})
        i = index[r["day"]]
        entry["calls"][i] += int(r["calls"])
        entry["errors"][i] += int(r["errors"])
        entry["denied"][i] += int(r["denied"])
        entry["cost"][i] += Decimal(r["cost"] or 0)
    ranked = sorted(per_key.values(), key=lambda e: (-sum(e["cost"]), -sum(e["calls"]), e["key"]))
    series = ranked[:MAX_SERIES]
    if len(ranked) > MAX_SERIES:  # the long tail as one band, so the stack still adds up to the total
        rest = ranked[MAX_SERIES:]
        series.append({"key": OTHER, "tenant_id": None, "user_id": None, "tool_name": None, "other": len(rest),
                       **{m: [sum((e[m][i] for e in rest), start=type(rest[0][m][0])(0)) for i in range(len(days))]
                          for m in ("calls", "errors", "denied", "cost")}})
    totals_calls = [sum(e["calls"][i] for e in ranked) for i in range(len(days))]
    totals_cost = [sum((e["cost"][i] for e in ranked), start=Decimal(0)) for i in range(len(days))]
    for e in series:
        e["cost"] = [_money(c) for c in e["cost"]]
        e.setdefault("other", 0)
    return {"stack_by": stack_by, "since": s.since.isoformat(), "until": s.until.isoformat(),
            "days": [d.isoformat() for d in days], "series": series,
            "totals": {"calls": totals_calls, "cost": [_money(c) for c in totals_cost],
                       "all_calls": sum(totals_calls), "all_cost": _money(sum(totals_cost, start=Decimal(0)))}}


async def tool_stats(db: Database, s: Scope, error_limit: int = 20) -> dict[str, Any]:
    where, params = s.where('"timestamp"')
    params["error_limit"] = error_limit
    since_ts = datetime.combine(s.since, datetime.min.time(), UTC)
    until_ts = datetime.combine(s.until + timedelta(days=1), datetime.min.time(), UTC)
    params.update(since=since_ts, until_next=until_ts)
    async with db.as_principal(s.principal) as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT coalesce(tool_name, '') AS tool_name, count(*)::bigint AS calls,"
            " count(*) FILTER (WHERE status = 'success')::bigint AS success,"
            " count(*) FILTER (WHERE status = 'error')::bigint AS errors,"
            " count(*) FILTER (WHERE status = 'denied')::bigint AS denied,"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE status <> 'denied') AS p50_ms,"
            " percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE status <> 'denied') AS p95_ms,"
            " max(duration_ms) FILTER (WHERE status <> 'denied') AS max_ms"
            f" FROM gateway.mcp_requests WHERE {where} GROUP BY 1 ORDER BY calls DESC, tool_name", params)
        tools = await cur.fetchall()
        await cur.execute(
            "SELECT coalesce(tool_name, '') AS tool_name, status, coalesce(error_message, '') AS message,"
            " count(*)::bigint AS count, max(\"timestamp\") AS last_at"
            f" FROM gateway.mcp_requests WHERE status <> 'success' AND {where}"
            " GROUP BY 1, 2, 3 ORDER BY count DESC, last_at DESC LIMIT %(error_limit)s", params)
        errors = await cur.fetchall()
    return {"since": s.since.isoformat(), "until": s.until.isoformat(), "tools": tools, "errors": errors}
