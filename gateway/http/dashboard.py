"""`/dashboard`: one HTML page, one script, one stylesheet, shipped in the package (gateway/http/static/).

The page holds no data of its own: it asks for a token (kept in sessionStorage), then calls
`/api/*` with it, so row-level security decides everything it shows. Assets are served from
the package with explicit content types and a strict Content-Security-Policy (no inline
script or style, nothing from another origin).
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "signin.js": "text/javascript; charset=utf-8",  # sign-in through the OAuth authorization server
}
_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> bytes:
    # static/ sits beside this module, whichever package that is.
    return resources.files(__package__ or "gateway").joinpath("static", name).read_bytes()


async def page(request: Request) -> Response:
    return Response(_asset("index.html"), media_type=ASSETS["index.html"], headers=_HEADERS)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS or name == "index.html":
        return PlainTextResponse("not found", status_code=404)
    return Response(_asset(name), media_type=ASSETS[name], headers=_HEADERS)


async def slash(request: Request) -> Response:
    return RedirectResponse("../dashboard", status_code=308)


def dashboard_routes() -> list[BaseRoute]:
    return [
        Route("/dashboard", page),
        Route("/dashboard/", slash),
        Route("/dashboard/{name}", asset),
    ]
