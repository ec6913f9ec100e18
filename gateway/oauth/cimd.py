"""Client ID Metadata Documents: the client_id is an HTTPS URL serving the client's metadata.

Fetching a URL named by an unauthenticated caller is an SSRF risk, so: HTTPS only, no
redirects, a size and a time limit, and every address the host resolves to must be public
(FastMCP's `ssrf_safe_fetch_response`, which also pins the connection to the checked
address). Hosts in MCP_GATEWAY_OAUTH_CIMD_ALLOWED_HOSTS may resolve to private or loopback
addresses (tests, on-premises clients) and are fetched with the same limits. The document
is validated with FastMCP's `CIMDDocument` model (no shared-secret auth methods) and must
name its own URL as client_id. Results are cached per process, bounded in size and time.
"""

from __future__ import annotations

import json
import ssl
from urllib.parse import urlsplit

import httpx
from fastmcp.server.auth.cimd import CIMDDocument
from fastmcp.server.auth.ssrf import SSRFError, SSRFFetchError, ssrf_safe_fetch_response
from pydantic import ValidationError

from auth.cache import TTLCache
from gateway.oauth.clients import redirect_uri_problem
from gateway.oauth.store import ClientRow

MAX_DOCUMENT_BYTES = 16 * 1024
FETCH_TIMEOUT = 5.0
CACHE_TTL = 300.0
NEGATIVE_TTL = 30.0


class CimdError(Exception):
    """The document cannot be used; the message is safe to show the caller (one line)."""


def is_cimd_client_id(client_id: str) -> bool:
    try:
        parts = urlsplit(client_id)
    except ValueError:
        return False
    return parts.scheme == "https" and bool(parts.hostname) and parts.path not in ("", "/")


class CimdFetcher:
    def __init__(self, *, allowed_hosts: list[str] | tuple[str, ...] = (), ca_file: str | None = None,
                 max_bytes: int = MAX_DOCUMENT_BYTES, timeout: float = FETCH_TIMEOUT,
                 max_entries: int = 1000) -> None:
        self.allowed_hosts = {h.strip().lower() for h in allowed_hosts if h.strip()}
        self.ca_file = ca_file
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._cache: TTLCache[ClientRow | str] = TTLCache(max_entries)

    async def client(self, client_id: str) -> ClientRow:
        if not is_cimd_client_id(client_id):
            raise CimdError("client_id is not an https URL with a path")
        key = client_id.encode()
        cached = self._cache.get(key)
        if isinstance(cached, str):
            raise CimdError(cached)
        if cached is not None:
            return cached
        try:
            row = self._validate(client_id, await self._fetch(client_id))
        except CimdError as exc:
            self._cache.put(key, str(exc), NEGATIVE_TTL)
            raise
        self._cache.put(key, row, CACHE_TTL)
        return row

    async def jwks(self, url: str) -> dict[str, object]:
        """A private_key_jwt client's key set from its jwks_uri (same protections, not cached)."""
        try:
            data = json.loads(await self._fetch(url))
        except (ValueError, UnicodeDecodeError):
            raise CimdError("client jwks_uri did not return JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise CimdError("client jwks_uri did not return a JWK set")
        return data

    async def _fetch(self, url: str) -> bytes:
        host = (urlsplit(url).hostname or "").lower()
        if host in self.allowed_hosts:
            return await self._fetch_allowed(url)
        try:
            response = await ssrf_safe_fetch_response(url, require_path=True, max_size=self.max_bytes,
                                                      timeout=self.timeout, overall_timeout=self.timeout * 2)
        except SSRFError as exc:
            raise CimdError(f"client metadata document refused: {exc}") from None
        except SSRFFetchError as exc:
            raise CimdError(f"client metadata document could not be fetched: {exc}") from None
        return response.content

    async def _fetch_allowed(self, url: str) -> bytes:
        verify: ssl.SSLContext | bool = True
        if self.ca_file:
            verify = ssl.create_default_context()
            verify.load_verify_locations(self.ca_file)
        try:
            async with httpx.AsyncClient(verify=verify, timeout=self.timeout, follow_redirects=False,
                                         trust_env=False) as client, client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise CimdError(f"client metadata document could not be fetched: HTTP {response.status_code}")
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise CimdError(f"client metadata document is larger than {self.max_bytes} bytes")
                return body
        except httpx.HTTPError as exc:
            raise CimdError(f"client metadata document could not be fetched: {type(exc).__name__}") from None

    def _validate(self, client_id: str, body: bytes) -> ClientRow:
        if len(body) > self.max_bytes:
            raise CimdError(f"client metadata document is larger than {self.max_bytes} bytes")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise CimdError("client metadata document is not JSON") from None
        if not isinstance(data, dict):
            raise CimdError("client metadata document is not a JSON object")
        try:
            doc = CIMDDocument.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "document"
            raise CimdError(f"client metadata document is invalid: {where}: {first.get('msg')}") from None
        if data.get("client_id") != client_id:
            raise CimdError("client metadata document names another client_id")
        for uri in doc.redirect_uris:
            problem = redirect_uri_problem(uri)
            if problem:
                raise CimdError(f"client metadata document: {problem}")
        if doc.token_endpoint_auth_method == "private_key_jwt" and not (doc.jwks or doc.jwks_uri):
            raise CimdError("client metadata document: private_key_jwt needs jwks or jwks_uri")
        grants = tuple(g for g in doc.grant_types if g in ("authorization_code", "refresh_token"))
        if "authorization_code" not in grants:
            raise CimdError("client metadata document: grant_types must include authorization_code")
        if "refresh_token" not in grants:
            grants += ("refresh_token",)  # the MCP authorization spec expects refresh for public clients
        return ClientRow(
            client_id=client_id, kind="cimd", client_name=(doc.client_name or "")[:200] or None,
            client_uri=str(doc.client_uri) if doc.client_uri else None,
            logo_uri=str(doc.logo_uri) if doc.logo_uri else None, redirect_uris=tuple(doc.redirect_uris),
            grant_types=grants, token_endpoint_auth_method=doc.token_endpoint_auth_method,
            jwks=doc.jwks, jwks_uri=str(doc.jwks_uri) if doc.jwks_uri else None, scope=doc.scope)

    def forget(self, client_id: str) -> None:
        self._cache.pop(client_id.encode())


