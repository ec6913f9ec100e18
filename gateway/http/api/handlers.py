"""Route handlers. Every read runs in `db.as_principal(caller)`: row-level security decides rows."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from psycopg.rows import dict_row
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from auth import PRIVILEGED_ROLES, Principal
from auth.provider import authenticated_principal
from auth.starlette import require_principal
from gateway.formatting import validation_message
from gateway.http.api import models as m
from gateway.mcp.sqlconsole import ConsoleBusy, ConsoleForbidden, ConsoleUnavailable, QueryFailed, QueryRefused
from gateway.store import reports

if TYPE_CHECKING:
    from gateway.wiring import Services

MAX_BODY = 256 * 1024
B = TypeVar("B", bound=BaseModel)

SESSION_COLUMNS = (
    "session_id::text AS session_id, tenant_id, user_id, user_email, user_name, client_type, client_version,"
    " protocol_version, transport, status, connected_at, last_activity, disconnected_at, total_duration,"
    " disconnect_reason, request_count,"
    " greatest(extract(epoch FROM now() - last_activity), 0)::float8 AS idle_seconds"
)
SUMMARY_COLUMNS = SESSION_COLUMNS + (
    ", error_count, denied_count, prompt_tokens, completion_tokens, total_tokens, total_cost::text AS total_cost,"
    " avg_duration_ms, max_duration_ms, first_request_at, last_request_at"
)


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, parameter: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.body = m.ErrorBody(error=error, detail=detail, parameter=parameter)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body.model_dump(exclude_none=True), status_code=self.status)


def error_response(status: int, error: str, detail: str, parameter: str | None = None) -> JSONResponse:
    return ApiError(status, error, detail, parameter).response()


@dataclass
class Endpoint:
    """One route: what it takes and returns (the OpenAPI document is built from these)."""

    method: str
    path: str                      # relative to /api, Starlette syntax
    handler: Callable[..., Awaitable[Response]]
    summary: str
    response: type[BaseModel]
    params: type[m.Params] | None = None
    body: type[BaseModel] | None = None
    errors: tuple[int, ...] = (401, 422, 503)
    csv: bool = False
    path_params: dict[str, str] = field(default_factory=dict)
    success: int = 200


def _params(model: type[m.Params], request: Request) -> Any:
    raw = {key: request.query_params.get(key) for key in request.query_params}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        name, message = validation_message(exc, default_location="query")
        raise ApiError(422, "invalid_parameter", f"{name}: {message}", name) from None


async def _caller(request: Request, services: Services) -> Principal:
    principal = authenticated_principal(request.scope)
    if principal is not None:
        return principal
    return await require_principal(request, services.gateway_auth)


def require_role(principal: Principal, roles: Collection[str], why: str) -> None:
    """403 saying `why` unless the caller holds one of `roles`."""
    if principal.role not in roles:
        raise ApiError(403, "forbidden", why)


async def json_body(request: Request, model: type[B], *, expected: str, limit: int = MAX_BODY,
                    parameter: str = "body") -> B:
    """The request body as `model`: 413 once it passes `limit` bytes (nothing more is read), 422 naming the
    problem when it is not JSON (`expected` shows the shape wanted) or does not validate."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "too_large", f"the request body is larger than {limit} bytes")
    try:
        payload = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(422, "invalid_body", f"the body is not JSON: expected {expected}", parameter) from None
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        name, message = validation_message(exc, default_location="body")
        raise ApiError(422, "invalid_body", f"{name}: {message}", name) from None


def _json(model: BaseModel) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"))


def _narrow(tenant_id: str | None, user_id: str | None) -> tuple[str, list[Any]]:
    """Optional tenant / user filters: they only narrow what row-level security already allows."""
    where, args = ["true"], []
    for column, value in (("tenant_id", tenant_id), ("user_id", user_id)):
        if value is not None:
            where.append(f"{column} = %s")
            args.append(value)
    return " AND ".join(where), args


class Handlers:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def _rows(self, principal: Principal, query: str, params: Any = None) -> list[dict[str, Any]]:
        async with self.services.db.as_principal(principal) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query, params)
            return await cur.fetchall()

    # -- GET /api/mcp/clients ----------------------------------------------------------------
    async def clients(self, request: Request) -> Response:
        principal = await _caller(request, self.services)
        p: m.ClientsParams = _params(m.ClientsParams, request)
        narrow, args = _narrow(p.tenant_id, p.user_id)
        async with self.services.db.as_principal(principal) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {SESSION_COLUMNS} FROM gateway.mcp_session_stats"
                " WHERE (status <> 'disconnected' OR disconnected_at >= now() - %s * interval '1 hour')"
                f" AND {narrow} ORDER BY last_activity DESC, session_id LIMIT %s", [p.hours, *args, p.limit])
            rows = await cur.fetchall()
            await cur.execute(
                "SELECT count(*) FILTER (WHERE last_activity >= now() - make_interval(secs => %s)) AS live,"
                "       count(*) FILTER (WHERE last_activity < now() - make_interval(secs => %s)) AS idle"
                f" FROM gateway.mcp_sessions WHERE status <> 'disconnected' AND {narrow}",
                [p.live_window, p.live_window, *args])
            counts = await cur.fetchone() or {"live": 0, "idle": 0}
        clients = [m.ClientSession.model_validate(
            {**r, "activity": m.activity_of(r["status"], r["idle_seconds"], p.live_window)}) for r in rows]
        return _json(m.ClientsResponse(clients=clients, count=len(clients), hours=p.hours, live=counts["live"],
                                       idle=counts["idle"], live_window_seconds=p.live_window,
                                       idle_timeout_seconds=self.services.settings.session_idle_timeout))

    # -- GET /api/mcp/sessions ---------------------------------------------------------------
    async def sessions(self, request: Request) -> Response:
        principal = await _caller(request, self.services)
        p: m.SessionsParams = _params(m.SessionsParams, request)
        where: list[str] = ["true"]
        args: list[Any] = []
        if p.status:
            where.append("status = %s")
            args.append(p.status)
        if p.user_id:
            where.append("user_id = %s")
            args.append(p.user_id)
        if p.tenant_id:
            where.append("tenant_id = %s")
            args.append(p.tenant_id)
        if p.activity == "ended":
            where.append("status = 'disconnected'")
        elif p.activity is not None:
            where.append("status <> 'disconnected' AND last_activity "
                         + (">=" if p.activity == "live" else "<") + " now() - make_interval(secs => %s)")
            args.append(p.live_window)
        cond = " AND ".join(where)
        async with self.services.db.as_principal(principal) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT count(*) AS n FROM gateway.mcp_sessions WHERE {cond}", args)
            total = (await cur.fetchone() or {"n": 0})["n"]
            await cur.execute(f"SELECT {SUMMARY_COLUMNS} FROM gateway.mcp_session_stats WHERE {cond}"
                              " ORDER BY connected_at DESC, session_id LIMIT %s OFFSET %s", [*args, p.limit, p.offset])
            rows = await cur.fetchall()
        return _json(m.SessionsResponse(sessions=[m.SessionSummary.model_validate(
            {**r, "activity": m.activity_of(r["status"], r["idle_seconds"], p.live_window)}) for r in rows],
                                        total=total, limit=p.limit, offset=p.offset))

    # -- GET /api/mcp/sessions/{session_id} --------------------------------------------------
    async def session_detail(self, request: Request) -> Response:
        principal = await _caller(request, self.services)
        p: m.SessionDetailParams = _params(m.SessionDetailParams, request)
        raw_id = request.path_params.get("session_id", "")
        try:
            session_id = uuid.UUID(raw_id)
        except ValueError:
            raise ApiError(404, "not_found", "no such session") from None
        async with self.services.db.as_principal(principal) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT {SUMMARY_COLUMNS} FROM gateway.mcp_session_stats WHERE session_id = %s",
                              (session_id,))
            session = await cur.fetchone()
            if session is None:  # missing, or not yours: the same answer
                raise ApiError(404, "not_found", "no such session")
            await cur.execute(
                "SELECT id::text AS id, method, tool_name, status, error_message, duration_ms, prompt_tokens,"
                " completion_tokens, estimated_cost::text AS estimated_cost, client_type, \"timestamp\""
                " FROM gateway.mcp_requests WHERE session_id = %s ORDER BY \"timestamp\", id LIMIT %s OFFSET %s",
                (session_id, p.limit, p.offset))
            requests = await cur.fetchall()
        return _json(m.SessionDetailResponse(
            session=m.SessionSummary.model_validate(session),
            requests=[m.RequestRecord.model_validate(r) for r in requests],
            requests_total=session["request_count"], limit=p.limit, offset=p.offset))

    # -- GET /api/mcp/sessions/disconnected --------------------------------------------------
    async def disconnected(self, request: Request) -> Response:
        principal = await _caller(request, self.services)
        p: m.DisconnectedParams = _params(m.DisconnectedParams, request)
        async with self.services.db.as_principal(principal) as conn:
            cur = conn.cursor(row_factory=dict_row)
            if p.tenant_id is None and p.user_id is None:
                await cur.execute(f"SELECT {SUMMARY_COLUMNS} FROM gateway.get_disconnected_sessions(%s, %s)",
                                  (p.days, p.limit))
                rows = await cur.fetchall()
                await cur.execute("SELECT * FROM gateway.get_disconnected_session_stats(%s)", (p.days,))
            else:  # the same window and statistics, narrowed to one tenant / user
                narrow, args = _narrow(p.tenant_id, p.user_id)
                window = ("status = 'disconnected' AND disconnected_at >= now() - %s * interval '1 day'"
                          f" AND {narrow}")
                await cur.execute(f"SELECT {SUMMARY_COLUMNS} FROM gateway.mcp_session_stats WHERE {window}"
                                  " ORDER BY disconnected_at DESC, session_id LIMIT %s", [p.days, *args, p.limit])
                rows = await cur.fetchall()
                await cur.execute(
                    f"WITH w AS (SELECT disconnect_reason, total_duration FROM gateway.mcp_sessions WHERE {window})"
                    " SELECT (SELECT count(*) FROM w) AS total_disconnected,"
                    " coalesce((SELECT jsonb_object_agg(c.reason, c.n) FROM (SELECT coalesce(disconnect_reason,"
                    " 'unknown') AS reason, count(*) AS n FROM w GROUP BY 1) AS c), '{}'::jsonb)"
                    " AS disconnect_reasons, (SELECT avg(total_duration) FROM w) AS avg_duration_seconds,"
                    " (SELECT max(total_duration) FROM w) AS max_duration_seconds,"
                    " (SELECT min(total_duration) FROM w) AS min_duration_seconds,"
                    " now() - %s * interval '1 day' AS period_start, now() AS period_end",
                    [p.days, *args, p.days])
            stats = await cur.fetchone()
        assert stats is not None
        reasons = stats["disconnect_reasons"]
        if isinstance(reasons, str):
            reasons = json.loads(reasons)
        return _json(m.DisconnectedResponse(
            sessions=[m.SessionSummary.model_validate(r) for r in rows],
            statistics=m.DisconnectStatistics(
                total_disconnected=stats["total_disconnected"],
                disconnect_reasons={str(k): int(v) for k, v in (reasons or {}).items()},
                avg_duration_seconds=stats["avg_duration_seconds"],
                max_duration_seconds=stats["max_duration_seconds"],
                min_duration_seconds=stats["min_duration_seconds"]),
            period=m.Period(start=stats["period_start"], end=stats["period_end"], days=p.days)))

    # -- GET /api/reports/costs --------------------------------------------------------------
    async def costs(self, request: Request) -> Response:
        principal = await _caller(request, self.services)
        p: m.CostsParams = _params(m.CostsParams, request)
        try:
            report = await reports.cost_report(self.services.db, principal, since=p.since, until=p.until,
                                               group_by=p.group_by, tenant_id=p.tenant_id, user_id=p.user_id,
                                               upstreams=[u.name for u in self.services.config.upstreams])
        except reports.ReportError as exc:
            raise ApiError(422, "invalid_parameter", str(exc), exc.param) from None
        if p.format == "csv":
            filename = f"costs-{p.group_by}-{report.since.isoformat()}-{report.until.isoformat()}.csv"
            return Response(report.to_csv(), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{filename}"'})
        return _json(m.CostReportResponse.model_validate(report.as_dict()))

    # -- POST /api/sql -----------------------------------------------------------------------
    async def sql(self, request: Request) -> Response:
        principal = await _caller(request, self.services)
        require_role(principal, PRIVILEGED_ROLES, "the SQL console is for tenant admins and auditors")
        req = await json_body(request, m.SqlRequest, expected='{"sql": "SELECT ..."}', parameter="sql")
        try:
            result = await self.services.console.run(principal, req.sql)
        except ConsoleForbidden as exc:
            raise ApiError(403, "forbidden", str(exc)) from None
        except QueryRefused as exc:
            raise ApiError(400, "refused", str(exc)) from None
        except QueryFailed as exc:
            raise ApiError(400, "query_failed", str(exc)) from None
        except ConsoleUnavailable as exc:
            raise ApiError(503, "unavailable", str(exc)) from None
        except ConsoleBusy as exc:
            raise ApiError(429, "busy", str(exc)) from None
        return Response(result.json_body(), media_type="application/json")


def endpoints(services: Services) -> list[Endpoint]:
    h = Handlers(services)
    return [
        Endpoint("GET", "/mcp/clients", h.clients, "Active and recently ended client sessions",
                 m.ClientsResponse, m.ClientsParams),
        Endpoint("GET", "/mcp/sessions", h.sessions, "Sessions with request counts, newest first (paged)",
                 m.SessionsResponse, m.SessionsParams),
        # before /mcp/sessions/{session_id}
        Endpoint("GET", "/mcp/sessions/disconnected", h.disconnected,
                 "Sessions that ended within `days` days, with statistics over the whole window",
                 m.DisconnectedResponse, m.DisconnectedParams),
        Endpoint("GET", "/mcp/sessions/{session_id}", h.session_detail,
                 "One session with its requests (paged); 404 when missing or not visible to you",
                 m.SessionDetailResponse, m.SessionDetailParams, errors=(401, 404, 422, 503),
                 path_params={"session_id": "Session id (UUID); anything else is 404"}),
        Endpoint("GET", "/reports/costs", h.costs,
                 "Calls, errors, denied, tokens and cost per user, tool, day or client (UTC days, both ends "
                 "inclusive)", m.CostReportResponse, m.CostsParams, csv=True),
        Endpoint("POST", "/sql", h.sql,
                 "Admin SQL console: one read-only SELECT over your tenant (auditors: all tenants)",
                 m.SqlResponse, body=m.SqlRequest, errors=(400, 401, 403, 413, 422, 503)),
        *_more_endpoints(services),
    ]


def _more_endpoints(services: Services) -> list[Endpoint]:
    from gateway.http.api.credentials import credential_endpoints
    from gateway.http.api.insights import insight_endpoints
    from gateway.http.api.tokens import token_endpoints

    return [*token_endpoints(services), *insight_endpoints(services), *credential_endpoints(services)]

