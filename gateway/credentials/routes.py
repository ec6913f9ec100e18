"""Browser routes of the per-user credential flows (outside /api: the authorization server redirects here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gateway.credentials.linkflow import CALLBACK_PATH, LinkFlow

if TYPE_CHECKING:
    from gateway.wiring import Services


def credential_routes(services: Services) -> list[Route]:
    async def callback(request: Request) -> Response:
        credentials = services.credentials
        if credentials is None or not any(c.credentials == "per_user_oauth" for c in credentials.upstreams.values()):
            return PlainTextResponse("no upstream uses per-user OAuth\n", status_code=404)
        return await LinkFlow(credentials, services.settings.resolved_public_url).callback(request)

    return [Route(CALLBACK_PATH, callback, methods=["GET"])]
