"""Dashboard questions over REST: usage per day, per-tool latency and errors, upstream health.

- `GET /api/reports/daily` and `GET /api/reports/tools`: everyone, rows limited by row-level
  security (gateway/store/insights.py runs the queries as the caller).
- `GET /api/upstreams`: tenant admins and auditors only. Upstream servers are shared by every
  tenant and their errors and targets describe the deployment, not the caller's data; a member
  learns that an upstream is down from the tool error of their call (403 here).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from auth import PRIVILEGED_ROLES
from gateway.http.api.handlers import ApiError, Endpoint, _caller, _params, require_role
from gateway.http.api.models import DateText, Params, SafeId
from gateway.store import insights
from gateway.store.reports import ReportError

if TYPE_CHECKING:
    from gateway.wiring import Services


class RangeParams(Params):
    since: DateText | None = Field(None, description="First UTC day, inclusive (default 6d: the last 7 days)")
    until: DateText | None = Field(None, description="Last UTC day, INCLUSIVE (default today); at most 366 days")
    tenant_id: SafeId | None = Field(None, description="Only this tenant (within what you may see)")
    user_id: SafeId | None = Field(None, description="Only this user (within what you may see)")


class DailyParams(RangeParams):
    stack_by: Literal["user", "tool"] = Field("user", description="One series per user or per tool")


class DailySeries(BaseModel):
    key: str = Field(description="tenant/user, or the tool name ('' = not a tool call); '(other)' = the rest")
    tenant_id: str | None
    user_id: str | None
    tool_name: str | None
    other: int = Field(description="For '(other)': how many series it sums")
    calls: list[int] = Field(description="One value per entry of `days`")
    errors: list[int]
    denied: list[int]
    cost: list[str] = Field(description="Decimal strings, one per entry of `days`")


class DailyTotals(BaseModel):
    calls: list[int]
    cost: list[str]
    all_calls: int
    all_cost: str


class DailyResponse(BaseModel):
    stack_by: Literal["user", "tool"]
    since: date
    until: date
    days: list[date] = Field(description="Every UTC day of the range, oldest first")
    series: list[DailySeries] = Field(description=f"At most {insights.MAX_SERIES} largest by cost, then '(other)'")
    totals: DailyTotals


class ToolStats(BaseModel):
    tool_name: str
    calls: int
    success: int
    errors: int
    denied: int
    p50_ms: float | None = Field(description="Median duration of calls that ran (denied excluded)")
    p95_ms: float | None
    max_ms: float | None


class ErrorGroup(BaseModel):
    tool_name: str
    status: Literal["error", "denied"]
    message: str = Field(description="Error message as recorded (credentials redacted)")
    count: int
    last_at: datetime


class ToolsResponse(BaseModel):
    since: date
    until: date
    tools: list[ToolStats]
    errors: list[ErrorGroup] = Field(description="The 20 most frequent error/denied messages")


class UpstreamState(BaseModel):
    name: str
    status: Literal["unknown", "up", "down"]
    transport: str
    target: str = Field(description="URL or command")
    tools: list[str] = Field(description="Tools it offers, as clients call them (<upstream>_<tool>)")
    tool_count: int | None = Field(description="From the last successful listing; null = never listed")
    last_ok: datetime | None
    last_error: str | None
    last_error_at: datetime | None


class UpstreamsResponse(BaseModel):
    upstreams: list[UpstreamState]


class Me(BaseModel):
    tenant_id: str
    user_id: str
    email: str | None
    name: str | None
    role: Literal["member", "admin", "auditor"]
    token_kind: str = Field(description="How you signed in: personal token, JWT, ...")


class InsightHandlers:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def _scope(self, request: Request, model: type[RangeParams]) -> tuple[insights.Scope, RangeParams]:
        principal = await _caller(request, self.services)
        p = _params(model, request)
        try:
            return insights.scope(principal, p.since, p.until, p.tenant_id, p.user_id), p
        except ReportError as exc:
            raise ApiError(422, "invalid_parameter", str(exc), exc.param) from None

    # -- GET /api/reports/daily --------------------------------------------------------------
    async def daily(self, request: Request) -> Response:
        scope, p = await self._scope(request, DailyParams)
        assert isinstance(p, DailyParams)
        data = await insights.daily_series(self.services.db, scope, p.stack_by)
        return JSONResponse(DailyResponse.model_validate(data).model_dump(mode="json"))

    # -- GET /api/reports/tools --------------------------------------------------------------
    async def tools(self, request: Request) -> Response:
        scope, _ = await self._scope(request, RangeParams)
        data = await insights.tool_stats(self.services.db, scope)
        return JSONResponse(ToolsResponse.model_validate(data).model_dump(mode="json"))

    # -- GET /api/me ------------------------------------------------------------------------
    async def me(self, request: Request) -> Response:
        p = await _caller(request, self.services)
        return JSONResponse(Me(tenant_id=p.tenant_id, user_id=p.user_id, email=p.email, name=p.name, role=p.role,
                               token_kind=str(p.token_kind)).model_dump(mode="json"))

    # -- GET /api/upstreams ------------------------------------------------------------------
    async def upstreams(self, request: Request) -> Response:
        principal = await _caller(request, self.services)
        require_role(principal, PRIVILEGED_ROLES, "upstream status is for tenant admins and auditors")
        registry = self.services.upstreams
        items = []
        for upstream in getattr(registry, "items", []):
            state = upstream.status()
            items.append(UpstreamState(
                name=upstream.name, status=state["status"], transport=state["transport"], target=state["target"],
                tools=upstream.offered_tools(), tool_count=state["tools"], last_ok=state["last_ok"],
                last_error=state["last_error"], last_error_at=state["last_error_at"]))
        return JSONResponse(UpstreamsResponse(upstreams=items).model_dump(mode="json"))


def insight_endpoints(services: Services) -> list[Endpoint]:
    h = InsightHandlers(services)
    return [
        Endpoint("GET", "/reports/daily", h.daily,
                 "Calls and cost per UTC day, one series per user or tool (both ends inclusive)",
                 DailyResponse, DailyParams),
        Endpoint("GET", "/reports/tools", h.tools,
                 "Per tool: calls by status and p50/p95/max latency; the most frequent error/denied messages",
                 ToolsResponse, RangeParams),
        Endpoint("GET", "/me", h.me, "Who the bearer token says you are (what every other answer is limited by)",
                 Me, errors=(401, 503)),
        Endpoint("GET", "/upstreams", h.upstreams,
                 "Upstream servers: up/down, last error, tools offered (tenant admins and auditors; members 403)",
                 UpstreamsResponse, errors=(401, 403, 503)),
    ]
