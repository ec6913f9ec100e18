"""RFC 7662 against a local endpoint: client_secret_basic, caching, inactive and failing endpoints."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.auth.conftest import FakeIdP, base_settings, run_gateway, serve


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_active_inactive_and_cache(idp: FakeIdP) -> None:
    settings = base_settings(idp, verify_cache_ttl=0.0)
    async with run_gateway(settings) as gw, httpx.AsyncClient() as http:
        idp.active["tok-cache-1"] = {"active": True, "sub": "ann", "tenant": "acme",
                                     "exp": int(time.time()) + 600}
        calls = idp.introspection_calls
        for _ in range(5):
            assert (await http.get(gw.url + "/api/whoami", headers=bearer("tok-cache-1"))).status_code == 200
        assert idp.introspection_calls == calls + 1  # cached
        # concurrent first sight of one token: one call
        idp.active["tok-cache-2"] = {"active": True, "sub": "ben", "tenant": "acme"}
        calls = idp.introspection_calls
        await asyncio.gather(*(http.get(gw.url + "/api/whoami", headers=bearer("tok-cache-2")) for _ in range(10)))
        assert idp.introspection_calls == calls + 1
        # inactive
        idp.active["tok-inactive"] = {"active": False, "sub": "cid", "tenant": "acme"}
        assert (await http.get(gw.url + "/api/whoami", headers=bearer("tok-inactive"))).status_code == 401
        # active but expired per its exp
        idp.active["tok-expired"] = {"active": True, "sub": "dan", "tenant": "acme", "exp": int(time.time()) - 600}
        assert (await http.get(gw.url + "/api/whoami", headers=bearer("tok-expired"))).status_code == 401


async def test_cache_never_outlives_exp(idp: FakeIdP) -> None:
    async with run_gateway(base_settings(idp, verify_cache_ttl=0.0, leeway_seconds=0)) as gw, \
            httpx.AsyncClient() as http:
        # int() truncates: +2 leaves between 1 and 2 s, so the first call is inside exp even on a busy machine.
        idp.active["tok-short"] = {"active": True, "sub": "eve", "tenant": "acme", "exp": int(time.time()) + 2}
        assert (await http.get(gw.url + "/api/whoami", headers=bearer("tok-short"))).status_code == 200
        deadline = time.monotonic() + 5
        while (await http.get(gw.url + "/api/whoami", headers=bearer("tok-short"))).status_code == 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)


async def test_wrong_client_credentials_refuse(idp: FakeIdP) -> None:
    idp.active["tok-creds"] = {"active": True, "sub": "fay", "tenant": "acme"}
    settings = base_settings(idp, introspection_client_secret="wrong")
    async with run_gateway(settings) as gw, httpx.AsyncClient() as http:
        assert (await http.get(gw.url + "/api/whoami", headers=bearer("tok-creds"))).status_code == 401


async def test_broken_endpoint_is_401_not_5xx(idp: FakeIdP) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def broken(request: object) -> PlainTextResponse:
        return PlainTextResponse("not json", status_code=200)

    async def failing(request: object) -> PlainTextResponse:
        return PlainTextResponse("boom", status_code=500)

    app = Starlette(routes=[Route("/a", broken, methods=["POST"]), Route("/b", failing, methods=["POST"])])
    async with serve(app) as url, httpx.AsyncClient() as http:
        for path in ("/a", "/b", "/nowhere"):
            async with run_gateway(base_settings(idp, introspection_url=url + path)) as gw:
                response = await http.get(gw.url + "/api/whoami", headers=bearer("tok-x"))
                assert response.status_code == 401
