"""JWKS against a real local key server: discovery, rotation, removal, and a bounded refresh rate."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.auth.conftest import SigningKey, base_settings, claims, rsa_key, run_gateway, run_idp


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def status(http: httpx.AsyncClient, url: str, token: str) -> int:
    return (await http.get(url + "/api/whoami", headers=bearer(token))).status_code


async def test_rotation_and_removal(keys: dict[str, SigningKey]) -> None:
    old, new = keys["rsa1"], keys["rsa2"]
    async with run_idp([old]) as idp, run_gateway(base_settings(idp, jwks_min_refresh_interval=0.0)) as gw, \
            httpx.AsyncClient() as http:
        old_token = old.sign(claims(iss=idp.url))
        assert await status(http, gw.url, old_token) == 200
        assert idp.discovery_fetches == 1 and idp.jwks_fetches == 1

        idp.keys = [old, new]  # the IdP publishes a new key and starts signing with it
        new_token = new.sign(claims(iss=idp.url, sub="bob"))
        assert await status(http, gw.url, new_token) == 200  # unknown kid -> one refresh, no restart
        assert idp.jwks_fetches == 2

        idp.keys = [new]  # the old key is withdrawn
        gw.auth.authenticator._results.clear()  # forget cached verdicts (they last seconds)
        probe = rsa_key("probe").sign(claims(iss=idp.url))  # any unknown kid makes the gateway refresh
        assert await status(http, gw.url, probe) == 401
        assert idp.jwks_fetches == 3
        assert await status(http, gw.url, old_token) == 401  # removed key: refused after refresh
        assert await status(http, gw.url, new.sign(claims(iss=idp.url, sub="carol"))) == 200
        assert idp.discovery_fetches == 1  # discovery once; only the key set is re-fetched


async def test_keys_refresh_when_cache_expires(keys: dict[str, SigningKey]) -> None:
    old, new = keys["rsa1"], keys["rsa2"]
    settings = base_settings(None, jwt_secret=None, jwt_issuer=None, jwks_cache_ttl=1.0,
                             jwks_min_refresh_interval=3600.0, verify_cache_ttl=0.0)
    async with run_idp([old]) as idp, httpx.AsyncClient() as http:
        async with run_gateway(settings.model_copy(update={"jwks_url": f"{idp.url}/jwks"})) as gw:
            token = old.sign(claims(iss=idp.url))
            assert await status(http, gw.url, token) == 200
            idp.keys = [new]
            fetches = idp.jwks_fetches
            while await status(http, gw.url, token) == 200:  # refused once the cached set expires
                await asyncio.sleep(0.1)
            assert idp.jwks_fetches == fetches + 1
            assert idp.discovery_fetches == 0  # JWKS URL given: no discovery


async def test_unknown_kid_flood_is_rate_limited(keys: dict[str, SigningKey]) -> None:
    async with run_idp([keys["rsa1"]]) as idp, \
            run_gateway(base_settings(idp, jwks_min_refresh_interval=30.0)) as gw, httpx.AsyncClient() as http:
        assert await status(http, gw.url, keys["rsa1"].sign(claims(iss=idp.url))) == 200
        rogue = keys["rogue"].private
        import jwt

        tokens = [jwt.encode(claims(iss=idp.url), rogue, algorithm="RS256", headers={"kid": uuid.uuid4().hex})
                  for _ in range(50)]
        results = await asyncio.gather(*(status(http, gw.url, t) for t in tokens))
        assert set(results) == {401}
        assert idp.jwks_fetches <= 2  # the initial fetch and at most one refresh per 30 s


async def test_idp_down_is_401_not_5xx(keys: dict[str, SigningKey]) -> None:
    async with run_idp([keys["rsa1"]]) as idp:
        url = idp.url
    # The IdP is gone: discovery fails, tokens are refused, the gateway stays healthy.
    settings = base_settings(None, oidc_issuer=url, jwks_min_refresh_interval=0.0)
    async with run_gateway(settings) as gw, httpx.AsyncClient() as http:
        assert await status(http, gw.url, keys["rsa1"].sign(claims(iss=url))) == 401
