"""Pydantic models of the REST API: query parameters, request bodies and responses.

The OpenAPI document (gateway/http/api/openapi.py) is generated from these, so what the
handlers validate and return is what the document says. Money is a decimal string
("0.01250000"); timestamps are ISO 8601 with offset; ids are strings.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator

# Query strings: no NUL (PostgreSQL text cannot hold it), bounded length.
SafeId = Annotated[str, Field(min_length=1, max_length=500, pattern=r"^[^\x00]*$")]


def _a_day(value: str, info: ValidationInfo) -> str:
    """The CLI's date grammar (gateway.store.reports.parse_day), so `--since` and `?since=` accept the same."""
    from gateway.store.reports import ReportError, parse_day

    try:
        parse_day(value, info.field_name or "date")
    except ReportError as exc:
        raise ValueError(str(exc).split(": ", 1)[-1]) from None
    return value


DateText = Annotated[str, Field(min_length=1, max_length=64,
                                description="ISO date (2026-11-01), ISO date-time, today, yesterday, "
                                            "or relative: 7d, 24h, 2w (the UTC date that long ago)"),
                     AfterValidator(_a_day)]


# A session is "live" while its last call is at most this many seconds old (default), "idle" while it
# is still open but quieter, "ended" once disconnected. Open sessions are only closed after the idle
# timeout (MCP_GATEWAY_SESSION_IDLE_TIMEOUT, 30 min): clients that never send DELETE, and sessionless
# clients, stay open that long, so "open" alone does not mean anyone is there.
LIVE_WINDOW_SECONDS = 300
LiveWindow = Annotated[int, Field(LIVE_WINDOW_SECONDS, ge=10, le=86_400,
                                  description="Seconds since the last call within which an open session "
                                              "counts as live (10..86400)")]
Activity = Literal["live", "idle", "ended"]


def activity_of(status: str, idle_seconds: float | None, window: float = LIVE_WINDOW_SECONDS) -> Activity:
    if status == "disconnected":
        return "ended"
    return "live" if idle_seconds is not None and idle_seconds <= window else "idle"


class Params(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------------------------- params


class ClientsParams(Params):
    hours: int = Field(24, ge=1, le=720, description="Also list sessions that ended within this many hours")
    limit: int = Field(100, ge=1, le=500, description="At most this many sessions")
    live_window: LiveWindow = LIVE_WINDOW_SECONDS
    tenant_id: SafeId | None = Field(None, description="Only this tenant (within what you may see)")
    user_id: SafeId | None = Field(None, description="Only this user (within what you may see)")


class SessionsParams(Params):
    limit: int = Field(50, ge=1, le=500, description="Page size")
    offset: int = Field(0, ge=0, le=1_000_000, description="Rows to skip")
    status: Literal["active", "idle", "disconnected"] | None = Field(None, description="Only this status")
    user_id: SafeId | None = Field(None, description="Only this user's sessions (within what you may see)")
    tenant_id: SafeId | None = Field(None, description="Only this tenant (within what you may see)")
    activity: Activity | None = Field(None, description="Only live, idle (open but quiet) or ended sessions")
    live_window: LiveWindow = LIVE_WINDOW_SECONDS


class SessionDetailParams(Params):
    limit: int = Field(100, ge=1, le=1000, description="Requests page size")
    offset: int = Field(0, ge=0, le=1_000_000, description="Requests to skip")


class DisconnectedParams(Params):
    days: int = Field(7, ge=1, le=30, description="Window: sessions that ended within this many days (1..30)")
    limit: int = Field(50, ge=1, le=200, description="At most this many sessions (1..200); statistics cover all")
    tenant_id: SafeId | None = Field(None, description="Only this tenant (within what you may see)")
    user_id: SafeId | None = Field(None, description="Only this user (within what you may see)")


class CostsParams(Params):
    since: DateText | None = Field(None, description="First UTC day, inclusive (default 30d)")
    until: DateText | None = Field(None, description="Last UTC day, INCLUSIVE (default today)")
    group_by: Literal["user", "tool", "day", "client", "upstream"] = Field("user", description="Row key")
    format: Literal["json", "csv"] = Field("json", description="json, or csv with a header row")
    tenant_id: SafeId | None = Field(None, description="Only this tenant (within what you may see)")
    user_id: SafeId | None = Field(None, description="Only this user (within what you may see)")


class SqlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, max_length=100_000, description="Exactly one SELECT")


# ---------------------------------------------------------------------------------- responses


class ErrorBody(BaseModel):
    """Every non-2xx JSON answer. `detail` is one line; `parameter` names a bad query parameter."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="not_found, invalid_parameter, forbidden, refused, query_failed, "
                                   "unavailable, invalid_token, ...")
    detail: str | None = None
    parameter: str | None = None
    error_description: str | None = None


class ClientSession(BaseModel):
    session_id: str
    tenant_id: str
    user_id: str
    user_email: str | None
    user_name: str | None
    client_type: str | None
    client_version: str | None
    protocol_version: str | None
    transport: str | None
    status: Literal["active", "idle", "disconnected"]
    connected_at: datetime
    last_activity: datetime
    disconnected_at: datetime | None
    total_duration: float | None = Field(description="Seconds (ended sessions)")
    disconnect_reason: str | None
    request_count: int
    idle_seconds: float = Field(description="Seconds since the last activity (as of the query)")
    activity: Activity = Field(description="live: open with a call within the live window; idle: open but quiet "
                                           "(ends after the idle timeout); ended: disconnected")

    @model_validator(mode="before")
    @classmethod
    def _activity(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("activity") is None:
            data = {**data, "activity": activity_of(data.get("status", ""), data.get("idle_seconds"))}
        return data


class ClientsResponse(BaseModel):
    clients: list[ClientSession]
    count: int
    hours: int
    live: int = Field(description="Open sessions with a call within the live window (all of them, not one page)")
    idle: int = Field(description="Open sessions quieter than that; they end after idle_timeout_seconds")
    live_window_seconds: int
    idle_timeout_seconds: float


class SessionSummary(ClientSession):
    error_count: int
    denied_count: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    total_cost: str = Field(description="Decimal string")
    avg_duration_ms: float | None
    max_duration_ms: float | None
    first_request_at: datetime | None
    last_request_at: datetime | None


class SessionsResponse(BaseModel):
    sessions: list[SessionSummary]
    total: int
    limit: int
    offset: int


class RequestRecord(BaseModel):
    id: str
    method: str
    tool_name: str | None
    status: Literal["success", "error", "denied"]
    error_message: str | None
    duration_ms: float
    prompt_tokens: int
    completion_tokens: int
    estimated_cost: str = Field(description="Decimal string")
    client_type: str | None
    timestamp: datetime


class SessionDetailResponse(BaseModel):
    session: SessionSummary
    requests: list[RequestRecord]
    requests_total: int
    limit: int
    offset: int


class DisconnectStatistics(BaseModel):
    total_disconnected: int
    disconnect_reasons: dict[str, int]
    avg_duration_seconds: float | None
    max_duration_seconds: float | None
    min_duration_seconds: float | None


class Period(BaseModel):
    start: datetime
    end: datetime
    days: int


class DisconnectedResponse(BaseModel):
    sessions: list[SessionSummary]
    statistics: DisconnectStatistics
    period: Period


class CostRow(BaseModel):
    tenant_id: str | None = Field(None, description="group_by=user")
    user_id: str | None = Field(None, description="group_by=user")
    tool_name: str | None = Field(None, description="group_by=tool ('' = not a tool call)")
    day: date | None = Field(None, description="group_by=day (UTC)")
    client_type: str | None = Field(None, description="group_by=client ('' = unknown)")
    upstream: str | None = Field(None, description="group_by=upstream ('' = the gateway's own tools)")
    calls: int
    errors: int
    denied: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: str = Field(description="Decimal string")


class CostTotals(BaseModel):
    calls: int
    errors: int
    denied: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: str


class CostReportResponse(BaseModel):
    group_by: Literal["user", "tool", "day", "client", "upstream"]
    since: date
    until: date
    until_inclusive: bool
    columns: list[str]
    rows: list[CostRow]
    totals: CostTotals


class SqlResponse(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = Field(description="More rows existed than the cap (10,000)")
