"""Shared helpers for the auth tests: real servers on loopback ports, keys, token builders.

- `serve(app)`            run an ASGI app with uvicorn on a free port (async context manager).
- `FakeIdP`                 OIDC discovery + JWKS (rotatable, counts fetches) + RFC 7662 introspection.
- `MemoryTokenStore`        a TokenStore in memory (the PostgreSQL one is tested in test_pat_db.py).
- `gateway_app(settings)`   FastMCP `whoami` tool + `/api/whoami` (protect) + `/api2/whoami`
                            (bare require_principal), wired the way the gateway does it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fastmcp import FastMCP
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from auth import AuthSettings, PatRecord, Principal
from auth.provider import GatewayAuth, current_principal
from auth.starlette import STATE_KEY, require_principal
from tests import helpers
from tests.helpers import b64url as b64url  # re-exported: tests import it from here
from tests.helpers import free_port as free_port

HS_SECRET = "s" * 24 + "-0123456789abcdef"  # 41 bytes
AUDIENCE = "https://gateway.test/mcp"
HS_ISSUER = "https://hs.test"


# --- servers ---------------------------------------------------------------------------------------

@asynccontextmanager
async def serve(app: Any, **config: Any) -> AsyncIterator[str]:
    """uvicorn on 127.0.0.1:<free port> in this event loop; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           lifespan="on", **config))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "server did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


# --- keys and tokens -------------------------------------------------------------------------------

@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any
    jwk: dict[str, Any]

    def sign(self, claims: Mapping[str, Any], **headers: Any) -> str:
        return jwt.encode(dict(claims), self.private, algorithm=self.alg, headers={"kid": self.kid, **headers})

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)


def rsa_key(kid: str, alg: str = "RS256") -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return SigningKey(kid, alg, private, {**jwk, "kid": kid, "use": "sig", "alg": alg})


def ec_key(kid: str) -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return SigningKey(kid, "ES256", private, {**jwk, "kid": kid, "use": "sig"})


def ed_key(kid: str) -> SigningKey:
    private = ed25519.Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return SigningKey(kid, "EdDSA", private, {**jwk, "kid": kid, "use": "sig"})


@pytest.fixture(scope="session")
def keys() -> dict[str, SigningKey]:
    """Generated once per run (RSA generation is the slow part)."""
    return {"rsa1": rsa_key("rsa1"), "rsa2": rsa_key("rsa2"), "ps": rsa_key("ps1", "PS256"),
            "ec": ec_key("ec1"), "ed": ed_key("ed1"), "rogue": rsa_key("rsa1")}


def hs_token(claims: Mapping[str, Any], secret: str | bytes = HS_SECRET, alg: str = "HS256", **headers: Any) -> str:
    """tests.helpers.hs_token with this directory's secret as the default."""
    return helpers.hs_token(claims, secret, alg, **headers)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "alice", "tenant": "acme", "iat": now, "exp": now + 600,
                            "aud": AUDIENCE, "email": "alice@acme.test", "name": "Alice"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


# --- a fake identity provider -----------------------------------------------------------------------

@dataclass
class FakeIdP:
    url: str = ""
    keys: list[SigningKey] = field(default_factory=list)
    jwks_fetches: int = 0
    discovery_fetches: int = 0
    introspection_calls: int = 0
    active: dict[str, dict[str, Any]] = field(default_factory=dict)
    client_id: str = "gateway"
    client_secret: str = "intro:secret/ü"

    def app(self) -> Starlette:
        async def discovery(request: Request) -> Response:
            self.discovery_fetches += 1
            return JSONResponse({"issuer": self.url, "jwks_uri": f"{self.url}/jwks",
                                 "introspection_endpoint": f"{self.url}/introspect"})

        async def jwks(request: Request) -> Response:
            self.jwks_fetches += 1
            return JSONResponse({"keys": [k.jwk for k in self.keys]})

        async def introspect(request: Request) -> Response:
            self.introspection_calls += 1
            from auth.introspection import basic_credentials

            if request.headers.get("authorization") != basic_credentials(self.client_id, self.client_secret):
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            form = await request.form()
            return JSONResponse(self.active.get(str(form.get("token")), {"active": False}))

        return Starlette(routes=[
            Route("/.well-known/openid-configuration", discovery),
            Route("/jwks", jwks),
            Route("/introspect", introspect, methods=["POST"]),
        ])


@asynccontextmanager
async def run_idp(keys: list[SigningKey]) -> AsyncIterator[FakeIdP]:
    fake = FakeIdP(keys=list(keys))
    async with serve(fake.app()) as url:
        fake.url = url
        yield fake


@pytest.fixture(scope="module")
async def idp(keys: dict[str, SigningKey]) -> AsyncIterator[FakeIdP]:
    async with run_idp([keys["rsa1"], keys["ps"], keys["ec"], keys["ed"]]) as fake:
        yield fake


# --- PATs in memory ---------------------------------------------------------------------------------

class MemoryTokenStore:
    def __init__(self) -> None:
        self.records: dict[bytes, PatRecord] = {}
        self.used: list[dict[str, datetime]] = []
        self.lookups = 0

    def add(self, *, tenant_id: str = "acme", user_id: str = "bob", role: str = "member",
            expires_at: datetime | None = None, revoked: bool = False) -> str:
        from auth.pat import generate_pat, hash_pat

        token = generate_pat()
        self.records[hash_pat(token)] = PatRecord(
            token_id=str(uuid.uuid4()), tenant_id=tenant_id, user_id=user_id, role=role,
            scopes=("mcp",), expires_at=expires_at, email=f"{user_id}@{tenant_id}.test", name=user_id.title(),
            revoked_at=datetime.now(UTC) if revoked else None)
        return token

    def revoke(self, token: str) -> None:
        from auth.pat import hash_pat

        key = hash_pat(token)
        self.records[key] = replace(self.records[key], revoked_at=datetime.now(UTC))

    async def find_by_hash(self, token_hash: bytes) -> PatRecord | None:
        self.lookups += 1
        return self.records.get(token_hash)

    async def mark_used(self, used: Mapping[str, datetime]) -> None:
        self.used.append(dict(used))


# --- the app under test -----------------------------------------------------------------------------

def base_settings(idp: FakeIdP | None = None, **overrides: Any) -> AuthSettings:
    values: dict[str, Any] = {"jwt_secret": HS_SECRET, "jwt_issuer": HS_ISSUER, "jwt_audience": [AUDIENCE],
                              "jwks_min_refresh_interval": 30.0}
    if idp is not None:
        values.update(oidc_issuer=idp.url, introspection_url=f"{idp.url}/introspect",
                      introspection_client_id=idp.client_id, introspection_client_secret=idp.client_secret)
    values.update(overrides)
    return AuthSettings(**values)


def build_app(gateway_auth: GatewayAuth) -> Starlette:
    mcp = FastMCP("auth-test", auth=gateway_auth.provider)

    @mcp.tool
    def whoami() -> dict[str, Any]:
        principal = current_principal()
        return principal.model_dump(mode="json") if principal else {}

    gateway_auth.install_routes(mcp)
    mcp_app = mcp.http_app(path="/mcp")

    async def api_whoami(request: Request) -> Response:
        principal = await require_principal(request)
        return JSONResponse(principal.model_dump(mode="json"))

    api = Starlette(routes=[Route("/whoami", api_whoami)])
    bare = Starlette(routes=[Route("/whoami", api_whoami)])
    bare.state.__setattr__(STATE_KEY, gateway_auth)
    app = Starlette(routes=[Mount("/api", app=gateway_auth.protect(api)), Mount("/api2", app=bare),
                            Mount("/", app=mcp_app)], lifespan=mcp_app.lifespan)
    return app


@dataclass
class Gateway:
    url: str
    auth: GatewayAuth
    store: MemoryTokenStore


@asynccontextmanager
async def run_gateway(settings: AuthSettings, store: MemoryTokenStore | None = None) -> AsyncIterator[Gateway]:
    store = store or MemoryTokenStore()
    gateway_auth = GatewayAuth(settings, token_store=store)
    async with serve(build_app(gateway_auth), h11_max_incomplete_event_size=4 * 1024 * 1024) as url:
        try:
            yield Gateway(url, gateway_auth, store)
        finally:
            await gateway_auth.aclose()


@pytest.fixture(scope="module")
async def gateway(idp: FakeIdP) -> AsyncIterator[Gateway]:
    async with run_gateway(base_settings(idp, public_url="http://127.0.0.1:8051")) as gw:
        yield gw


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "auth-test", "version": "0"}}}


async def post_mcp(http: httpx.AsyncClient, url: str, authorization: str | None) -> httpx.Response:
    headers: dict[str, Any] = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization.encode()  # bytes: lets tests send non-ASCII
    return await http.post(f"{url}/mcp", json=INITIALIZE, headers=headers)


async def whoami_mcp(url: str, token: str) -> dict[str, Any]:
    from fastmcp import Client

    async with Client(f"{url}/mcp", auth=token) as client:
        result = await client.call_tool("whoami", {})
    return result.structured_content or json.loads(result.content[0].text)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything logged at DEBUG, FastMCP's own (non-propagating) loggers included."""
    caplog.set_level(logging.DEBUG)
    extra = [logging.getLogger(name) for name in ("fastmcp", "mcp", "uvicorn", "httpx")]
    for logger in extra:
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in extra:
        logger.removeHandler(caplog.handler)


def principal_of(data: Mapping[str, Any]) -> Principal:
    return Principal.model_validate(data)
