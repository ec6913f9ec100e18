"""REST API under /api (bearer-authenticated, row-level security decides every row)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from gateway.services import Services


def create_api_app(services: Services) -> Starlette:
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse({"openapi": "3.1.0", "info": {"title": "mcp-gateway", "version": "0.1.0"},
                             "paths": {}})

    return Starlette(routes=[Route("/openapi.json", openapi)])
