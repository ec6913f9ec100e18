"""Cost reports: calls, errors, denied, tokens and cost per user, tool, day or client.

Reports read `gateway.usage_daily`, the per (tenant, user, UTC day, tool, client) rollup
that the statement-level trigger on `gateway.mcp_requests` (migrations/003) updates in
the same transaction as every insert — today included. So a report never scans raw
request rows, and it always equals the sum of the raw rows it summarises
(tests/api/test_costs.py proves this).

Reads run through `Database.as_principal`: row-level security decides which rows a
caller sees (members: themselves; tenant admins: their tenant; auditors: everything).
The `tenant_id` / `user_id` arguments only narrow further.

Dates are UTC calendar days, both ends INCLUSIVE (`since=2026-11-01, until=2026-11-30`
is November). Accepted forms: ISO date `2026-11-01`, ISO date-time (its UTC date),
`today`, `yesterday`, and relative `<n>d`, `<n>h`, `<n>w` = the UTC date of (now − n units)
(`7d` → the 8 UTC days from 7 days ago through today; `0d` → today). Default: `30d` .. today.
Cost is numeric(20, 8) in the database and a decimal STRING everywhere in JSON and CSV
(e.g. "0.01250000"), never a float.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from psycopg.rows import dict_row

from auth import Principal
from gateway.csvsafe import to_csv
from gateway.formatting import money
from gateway.store.db import Database

GroupBy = Literal["user", "tool", "day", "client", "upstream"]
GROUP_BYS: tuple[str, ...] = ("user", "tool", "day", "client", "upstream")
DEFAULT_SINCE = "30d"
MIN_DATE = date(2000, 1, 1)
MAX_DATE = date(9999, 12, 30)

_RELATIVE = re.compile(r"^\s*(\d{1,6})\s*([dhw])\s*$", re.IGNORECASE)
_YEAR_OUT_OF_RANGE = re.compile(r"^([0-9]{5,}|0000)-")  # year 0 or past 9999: not a date Python can hold

# group key -> (select list, group by list, output columns)
_KEYS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "user": ("d.tenant_id, d.user_id", "d.tenant_id, d.user_id", ("tenant_id", "user_id")),
    "tool": ("d.tool_name", "d.tool_name", ("tool_name",)),
    "day": ("d.day", "d.day", ("day",)),
    "client": ("d.client_type", "d.client_type", ("client_type",)),
    # '<upstream>_<tool>' -> upstream when the prefix is a configured upstream; '' = the gateway's own tools
    "upstream": ("_u.upstream", "_u.upstream", ("upstream",)),
}
_UPSTREAM_OF = (" CROSS JOIN LATERAL (SELECT CASE"
                " WHEN split_part(d.tool_name, '_', 1) = ANY(%(upstreams)s::text[])"
                " AND position('_' in d.tool_name) > 0"
                " THEN split_part(d.tool_name, '_', 1) ELSE '' END AS upstream) _u")
METRICS = ("calls", "errors", "denied", "prompt_tokens", "completion_tokens", "total_tokens", "cost")


class ReportError(ValueError):
    """Bad report input; `param` names the parameter, `str(exc)` is one line."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def parse_day(value: str | date | None, param: str, *, now: datetime | None = None) -> date | None:
    """ISO date / date-time / today / yesterday / `7d` `24h` `2w` -> a UTC date (None stays None)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    text = value.strip()
    now = now or datetime.now(UTC)
    if not text:
        raise ReportError(param, f"{param}: empty; expected an ISO date (2026-11-01) or a relative form (7d, 24h)")
    if "\x00" in text or len(text) > 64:
        raise ReportError(param, f"{param}: not a date")
    lowered = text.lower()
    if lowered == "today":
        return now.date()
    if lowered == "yesterday":
        return now.date() - timedelta(days=1)
    match = _RELATIVE.match(text)
    if match:
        amount, unit = int(match.group(1)), match.group(2).lower()
        delta = {"d": timedelta(days=amount), "h": timedelta(hours=amount), "w": timedelta(weeks=amount)}[unit]
        try:
            day = (now - delta).date()
        except OverflowError:
            raise ReportError(param, f"{param}: {text!r} reaches too far back") from None
        return max(day, MIN_DATE)
    out_of_range = ReportError(param, f"{param}: {text!r} is out of range ({MIN_DATE} .. {MAX_DATE})")
    if _YEAR_OUT_OF_RANGE.match(text):
        raise out_of_range
    try:
        if len(text) <= 10:
            day = date.fromisoformat(text)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            day = moment.astimezone(UTC).date() if moment.tzinfo else moment.date()
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is in year 0 in UTC
        raise out_of_range from None
    except ValueError:
        raise ReportError(param, f"{param}: {text!r} is not an ISO date (2026-11-01) or a relative form "
                                 "(7d, 24h, 2w)") from None
    if not MIN_DATE <= day <= MAX_DATE:
        raise out_of_range
    return day


@dataclass
class CostReport:
    group_by: str
    since: date
    until: date
    columns: tuple[str, ...]       # key columns then METRICS
    rows: list[dict[str, Any]]     # cost as a decimal string
    totals: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "group_by": self.group_by,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "until_inclusive": True,
            "columns": list(self.columns),
            "rows": self.rows,
            "totals": self.totals,
        }

    def to_csv(self) -> str:
        """Formula-like text escaped (gateway.csvsafe); cost written as the number it is."""
        return to_csv(self.columns, ([Decimal(row[c]) if c == "cost" else row[c] for c in self.columns]
                                     for row in self.rows))


def resolve_range(since: str | date | None, until: str | date | None,
                  *, now: datetime | None = None) -> tuple[date, date]:
    now = now or datetime.now(UTC)
    first = parse_day(since if since is not None else DEFAULT_SINCE, "since", now=now)
    last = parse_day(until, "until", now=now) if until is not None else now.date()
    assert first is not None and last is not None
    if first > last:
        raise ReportError("since", f"since ({first.isoformat()}) is after until ({last.isoformat()})")
    return first, last


async def cost_report(db: Database, principal: Principal, *, since: str | date | None = None,
                      until: str | date | None = None, group_by: str = "user", tenant_id: str | None = None,
                      user_id: str | None = None, now: datetime | None = None,
                      upstreams: Sequence[str] = ()) -> CostReport:
    """Per-`group_by` usage between two UTC dates (inclusive), as `principal` may see it."""
    if group_by not in _KEYS:
        raise ReportError("group_by", f"group_by: {group_by!r} is not one of {', '.join(GROUP_BYS)}")
    for name, value in (("tenant_id", tenant_id), ("user_id", user_id)):
        if value is not None and (not value or "\x00" in value or len(value) > 500):
            raise ReportError(name, f"{name}: not a valid id")
    first, last = resolve_range(since, until, now=now)
    select, group, key_columns = _KEYS[group_by]
    where = ["d.day >= %(since)s", "d.day <= %(until)s"]
    if tenant_id is not None:
        where.append("d.tenant_id = %(tenant_id)s")
    if user_id is not None:
        where.append("d.user_id = %(user_id)s")
    query = (
        f"SELECT {select},"
        " sum(d.calls)::bigint AS calls, sum(d.errors)::bigint AS errors, sum(d.denied)::bigint AS denied,"
        " sum(d.prompt_tokens)::bigint AS prompt_tokens, sum(d.completion_tokens)::bigint AS completion_tokens,"
        " (sum(d.prompt_tokens) + sum(d.completion_tokens))::bigint AS total_tokens,"
        " sum(d.cost)::numeric(20, 8) AS cost"
        " FROM gateway.usage_daily AS d"
        f"{_UPSTREAM_OF if group_by == 'upstream' else ''}"
        f" WHERE {' AND '.join(where)}"
        f" GROUP BY {group}"
        f" ORDER BY {'' if group_by == 'day' else f'{len(key_columns) + 7} DESC, '}{group}"
    )
    params = {"since": first, "until": last, "tenant_id": tenant_id, "user_id": user_id,
              "upstreams": list(upstreams)}
    async with db.as_principal(principal) as conn:
        records = await (await conn.cursor(row_factory=dict_row).execute(query, params)).fetchall()
    rows: list[dict[str, Any]] = []
    totals: dict[str, Any] = {m: 0 for m in METRICS}
    total_cost = Decimal(0)
    for record in records:
        row: dict[str, Any] = {}
        for column in key_columns:
            value = record[column]
            row[column] = value.isoformat() if isinstance(value, date) else value
        for metric in METRICS:
            value = record[metric]
            if metric == "cost":
                cost = Decimal(value or 0)
                total_cost += cost
                row[metric] = money(cost)
            else:
                row[metric] = int(value or 0)
                totals[metric] += row[metric]
        rows.append(row)
    totals["cost"] = money(total_cost)
    return CostReport(group_by=group_by, since=first, until=last, columns=(*key_columns, *METRICS),
                      rows=rows, totals=totals)
