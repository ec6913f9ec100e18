"""REST API under /api (bearer-authenticated, row-level security decides every row).

Mounted by gateway/http/app.py as `gateway_auth.protect(create_api_app(services))`, so every
route here sees a verified caller. Endpoints and their models: gateway/http/api/handlers.py,
gateway/http/api/models.py; the OpenAPI document is built from them (gateway/http/api/openapi.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psycopg import OperationalError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.http.api.handlers import ApiError, Endpoint, endpoints, error_response

UNAVAILABLE_RETRY_AFTER = 5  # seconds

if TYPE_CHECKING:
    from gateway.wiring import Services


def _route(endpoint: Endpoint) -> Route:
    async def call(request: Request) -> Response:
        try:
            return await endpoint.handler(request)
        except ApiError as exc:
            return exc.response()
        except OperationalError:
            return _unavailable()
        except Exception as exc:
            if type(exc).__name__ == "PoolTimeout":
                return _unavailable()
            raise

    call.__name__ = endpoint.handler.__name__
    return Route(endpoint.path, call, methods=[endpoint.method])


def _unavailable() -> Response:
    """The database did not answer in time: an outage, retry later (never a verdict on the caller)."""
    response = error_response(503, "unavailable", "the database is unavailable")
    response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER)
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    names = {404: "not_found", 405: "method_not_allowed", 503: "unavailable"}
    return JSONResponse({"error": names.get(exc.status_code, "error"), "detail": str(exc.detail)},
                        status_code=exc.status_code, headers=getattr(exc, "headers", None))


def create_api_app(services: Services) -> Starlette:
    from gateway.http.api.openapi import build_openapi

    routes_spec = endpoints(services)
    document: dict[str, Any] = build_openapi(routes_spec)
    app = Starlette(routes=[_route(e) for e in routes_spec], exception_handlers={HTTPException: _http_error})
    app.state.openapi = document  # served at /api/openapi.json without a token by gateway/http/app.py: no data in it
    return app
