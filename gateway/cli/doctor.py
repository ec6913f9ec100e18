"""`mcp-gateway doctor --url URL --token TOKEN`: check a deployment the way a client would.

Checks, in order (a check that cannot run because an earlier one failed is `skip`):

  connect     TCP connection to the host and port
  tls         https: the certificate verifies (and does not expire within 14 days);
              http: fine on loopback, a warning elsewhere (tokens would cross the network in clear)
  health      GET /health answers 200 from an mcp-gateway
  metadata    RFC 9728 /.well-known/oauth-protected-resource/mcp names this URL and an authorization server
  challenge   /mcp without a token: 401 with `WWW-Authenticate: Bearer ... resource_metadata=...`
  token       /mcp with the token: accepted
  tools       tools/list works and includes whoami
  whoami      calling whoami works; prints the principal
  gateway     health_check: database up, tracking backlog
  console     (WARN only) the admin SQL console's side channels are open: migrations ran without a superuser

Every failure says what to fix. Exit 0 when nothing failed (warnings allowed), 1 when a check
failed, 2 for bad input.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import typer

from gateway import __version__
from gateway.errors import UserError

CERT_WARN_DAYS = 14
_MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class Target:
    base_url: str   # scheme://host[:port][/prefix]
    mcp_url: str    # base_url + /mcp
    scheme: str
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False


def parse_target(url: str) -> Target:
    """The gateway's base URL or its /mcp URL -> both. Raises UserError on bad input."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"--url {url!r}: expected an http(s) URL such as https://gateway.example.com/mcp")
    if parts.query or parts.fragment:
        raise UserError(f"--url {url!r}: no query or fragment, just the gateway URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UserError(f"--url {url!r}: the port is not a number in 1..65535") from None
    path = parts.path.rstrip("/")
    if path.endswith("/mcp"):
        path = path[: -len("/mcp")]
    elif path.endswith(("/sse", "/messages")):
        raise UserError(f"--url {url!r}: give the gateway's base URL or its /mcp URL (doctor checks Streamable "
                        "HTTP; the legacy /sse endpoint is served next to it)")
    base = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return Target(base_url=base, mcp_url=base + "/mcp", scheme=parts.scheme, host=parts.hostname, port=port)


class Doctor:
    def __init__(self, url: str, token: str, *, timeout: float = 10.0,
                 echo: Callable[[str], None] = typer.echo, replicas: int | None = None) -> None:
        self.replicas = replicas
        token = token.strip()
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        if not token:
            raise UserError("--token is empty")
        if any(c.isspace() for c in token):
            raise UserError("--token contains whitespace: pass only the token")
        self.target = parse_target(url)
        self.token = token
        self.timeout = timeout
        self.echo = echo
        self.checks: list[Check] = []
        self.ssl_context = ssl.create_default_context()

    # -- running ----------------------------------------------------------------------------

    def run(self) -> int:
        self.echo(f"mcp-gateway doctor {__version__}: checking {self.target.mcp_url}")
        steps: list[tuple[str, Callable[[], Check]]] = [
            ("connect", self.check_connect), ("tls", self.check_tls), ("health", self.check_health),
            ("metadata", self.check_metadata), ("challenge", self.check_challenge), ("token", self.check_token),
            ("tools", self.check_tools),
        ]
        blocking = {"connect", "tls", "token"}  # nothing after these can work when they fail
        self._tools: list[str] = []
        self._principal: dict[str, Any] | None = None
        stopped = False
        for name, step in steps:
            if stopped:
                self._report(Check(name, "skip", "not checked (an earlier check failed)"))
                continue
            try:
                check = step()
            except Exception as exc:  # a check never crashes the doctor
                check = Check(name, "fail", f"unexpected {type(exc).__name__}: {exc}",
                              "report this with the output of `mcp-gateway doctor`")
            self._report(check)
            if check.status == "fail" and name in blocking:
                stopped = True
        if not stopped and self._tools:
            for check in self.check_calls():
                self._report(check)
        else:
            for name in ("whoami", "gateway"):
                self._report(Check(name, "skip", "not checked (an earlier check failed)"))
        failed = [c for c in self.checks if c.status == "fail"]
        warned = [c for c in self.checks if c.status == "warn"]
        if failed:
            self.echo(f"\n{len(failed)} check(s) failed: {', '.join(c.name for c in failed)}")
            return 1
        self.echo("\nall checks passed" + (f" ({len(warned)} warning(s))" if warned else ""))
        return 0

    def _report(self, check: Check) -> None:
        self.checks.append(check)
        self.echo(f"  {_MARK[check.status]:<4}  {check.name:<9}  {check.detail}")
        if check.fix and check.status in ("fail", "warn"):
            self.echo(f"{'':19}fix: {check.fix}")

    def _http(self) -> httpx.Client:
        return httpx.Client(timeout=self.timeout, verify=self.ssl_context, follow_redirects=False,
                            headers={"User-Agent": f"mcp-gateway-doctor/{__version__}"})

    # -- checks ------------------------------------------------------------------------------

    def check_connect(self) -> Check:
        t = self.target
        started = time.perf_counter()
        try:
            with socket.create_connection((t.host, t.port), timeout=self.timeout):
                pass
        except socket.gaierror as exc:
            return Check("connect", "fail", f"cannot resolve {t.host}: {exc.strerror}",
                         "check the host name in --url (and DNS on this machine)")
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            return Check("connect", "fail", f"cannot connect to {t.host}:{t.port}: {reason}",
                         "is the gateway running and listening there? `mcp-gateway serve` listens on "
                         "MCP_GATEWAY_HOST:MCP_GATEWAY_PORT (127.0.0.1:8051 by default; 0.0.0.0 in a container); "
                         "check the port mapping and firewalls")
        ms = (time.perf_counter() - started) * 1000
        return Check("connect", "ok", f"{t.host}:{t.port} accepts connections ({ms:.0f} ms)")

    def check_tls(self) -> Check:
        t = self.target
        if t.scheme == "http":
            if t.loopback:
                return Check("tls", "ok", "plain http on loopback (fine for local use)")
            return Check("tls", "warn", f"plain http to {t.host}: tokens cross the network unencrypted",
                         "put the gateway behind a TLS-terminating proxy and use an https:// URL "
                         "(then set MCP_GATEWAY_PUBLIC_URL to it)")
        try:
            with socket.create_connection((t.host, t.port), timeout=self.timeout) as sock, \
                    self.ssl_context.wrap_socket(sock, server_hostname=t.host) as tls:
                cert = tls.getpeercert() or {}
                version = tls.version()
        except ssl.SSLCertVerificationError as exc:
            return Check("tls", "fail", f"certificate not valid: {exc.verify_message or exc.reason}",
                         "serve a certificate for this host name signed by a trusted CA, including the "
                         "intermediate certificates (clients refuse what fails here)")
        except (ssl.SSLError, OSError) as exc:
            return Check("tls", "fail", f"TLS handshake failed: {getattr(exc, 'reason', None) or exc}",
                         "is this port serving TLS? use http:// for a plain listener, or fix the proxy's TLS setup")
        expires = ssl.cert_time_to_seconds(str(cert["notAfter"])) if "notAfter" in cert else None
        if expires is not None:
            days = (expires - time.time()) / 86400
            if days < CERT_WARN_DAYS:
                return Check("tls", "warn", f"certificate valid but expires in {days:.0f} day(s)",
                             "renew the certificate")
            return Check("tls", "ok", f"certificate valid for {t.host} ({version}, expires in {days:.0f} days)")
        return Check("tls", "ok", f"certificate valid for {t.host} ({version})")

    def check_health(self) -> Check:
        url = self.target.base_url + "/health"
        try:
            with self._http() as http:
                response = http.get(url)
        except httpx.HTTPError as exc:
            return Check("health", "fail", f"GET {url}: {type(exc).__name__}: {exc}",
                         "check the URL and any proxy in front of the gateway")
        if response.status_code != 200:
            return Check("health", "fail", f"GET {url} answered {response.status_code}",
                         "is this an mcp-gateway? if a proxy serves it under a path prefix, include the prefix in "
                         "--url; the proxy must pass /health, /mcp, /sse, /messages/ and /.well-known/ through")
        try:
            body = response.json()
        except ValueError:
            body = {}
        version = body.get("version") if isinstance(body, dict) else None
        if not version:
            return Check("health", "warn", f"GET {url} answered 200 but not as mcp-gateway does",
                         "check that --url points at the gateway, not at another service")
        return Check("health", "ok", f"mcp-gateway {version} is live")

    def check_metadata(self) -> Check:
        t = self.target
        url = t.base_url + "/.well-known/oauth-protected-resource/mcp"
        try:
            with self._http() as http:
                response = http.get(url)
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            return Check("metadata", "fail", f"GET {url}: {type(exc).__name__}",
                         "the proxy must pass /.well-known/oauth-protected-resource* through to the gateway")
        if not isinstance(data, dict):
            return Check("metadata", "fail", f"GET {url} answered {response.status_code} without RFC 9728 metadata",
                         "the proxy must pass /.well-known/oauth-protected-resource* through to the gateway")
        resource = str(data.get("resource", "")).rstrip("/")
        servers = data.get("authorization_servers") or []
        if resource != t.mcp_url:
            return Check("metadata", "fail", f"metadata names resource {resource or '(none)'}, but you reach the "
                         f"gateway at {t.mcp_url}",
                         f"set MCP_GATEWAY_PUBLIC_URL={t.base_url} on the gateway (clients check this match)")
        if not servers:
            return Check("metadata", "fail", "metadata lists no authorization server",
                         "set MCP_GATEWAY_OIDC_ISSUER (or MCP_GATEWAY_AUTHORIZATION_SERVERS)")
        return Check("metadata", "ok", f"RFC 9728 resource {resource}; authorization server(s): {', '.join(servers)}")

    def check_challenge(self) -> Check:
        url = self.target.mcp_url
        try:
            with self._http() as http:
                response = http.post(url, json=_initialize(1), headers=_MCP_HEADERS)
        except httpx.HTTPError as exc:
            return Check("challenge", "fail", f"POST {url}: {type(exc).__name__}", "check the proxy in front of /mcp")
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code != 401:
            return Check("challenge", "fail", f"POST {url} without a token answered {response.status_code}, not 401",
                         "something in front of the gateway answers for /mcp, or the URL is not the gateway's")
        if "resource_metadata=" not in challenge:
            return Check("challenge", "warn", "401 without resource_metadata in WWW-Authenticate",
                         "the proxy must pass the WWW-Authenticate header through unchanged")
        return Check("challenge", "ok", "401 with a Bearer challenge pointing at the metadata")

    def check_token(self) -> Check:
        url = self.target.mcp_url
        headers = _MCP_HEADERS | {"Authorization": f"Bearer {self.token}"}
        try:
            with self._http() as http:
                response = http.post(url, json=_initialize(1), headers=headers)
                session = response.headers.get("mcp-session-id")
                if session and response.status_code == 200:
                    http.delete(url, headers=headers | {"Mcp-Session-Id": session})
        except httpx.HTTPError as exc:
            return Check("token", "fail", f"POST {url}: {type(exc).__name__}", "check the proxy in front of /mcp")
        if response.status_code == 401:
            challenge = response.headers.get("www-authenticate", "")
            description = _challenge_param(challenge, "error_description") or _challenge_param(challenge, "error")
            return Check("token", "fail", f"the token was refused ({description or '401'})",
                         "create a fresh token (`mcp-gateway token create --tenant T --user U`) or, for IdP "
                         "tokens, check that its issuer/audience/signing keys match MCP_GATEWAY_JWT_* / "
                         "MCP_GATEWAY_OIDC_ISSUER and that it has not expired; the gateway's log names the "
                         "reason for each refusal")
        if response.status_code == 403:
            return Check("token", "fail", "the token was accepted but is not allowed here (403)",
                         "use a token with the needed scope or role")
        if response.status_code >= 400:
            return Check("token", "fail", f"initialize answered {response.status_code}: {response.text[:200]}",
                         "check the gateway's log at this time")
        return Check("token", "ok", "the token is accepted")

    def check_tools(self) -> Check:
        async def list_tools() -> list[str]:
            async with self._client() as client:
                return [tool.name for tool in await client.list_tools()]

        try:
            self._tools = asyncio.run(list_tools())
        except Exception as exc:
            return Check("tools", "fail", f"tools/list failed: {_error(exc)}",
                         "check the gateway's log; a proxy that buffers responses breaks MCP streaming "
                         "(nginx: proxy_buffering off)")
        if "whoami" not in self._tools:
            return Check("tools", "fail", f"{len(self._tools)} tool(s) listed, but no whoami",
                         "--url must point at mcp-gateway itself, not at one of its upstream servers")
        return Check("tools", "ok", f"{len(self._tools)} tool(s) listed")

    def check_calls(self) -> list[Check]:
        async def call() -> tuple[Any, Any]:
            async with self._client() as client:
                who = await client.call_tool("whoami", {}, raise_on_error=False)
                health = await client.call_tool("health_check", {}, raise_on_error=False) \
                    if "health_check" in self._tools else None
                return who, health

        try:
            who, health = asyncio.run(call())
        except Exception as exc:
            return [Check("whoami", "fail", f"tools/call failed: {_error(exc)}", "check the gateway's log"),
                    Check("gateway", "skip", "not checked (an earlier check failed)")]
        checks = []
        principal = _structured(who)
        if who.is_error or not isinstance(principal, dict):
            checks.append(Check("whoami", "fail", f"whoami returned an error: {_text(who)[:200]}",
                                "check the gateway's log"))
        else:
            self._principal = principal
            shown = (f"user {principal.get('user_id')} in tenant {principal.get('tenant_id')}, role "
                     f"{principal.get('role')}, {principal.get('token_kind') or 'token'}")
            if principal.get("email"):
                shown += f", {principal['email']}"
            checks.append(Check("whoami", "ok", shown))
        if health is None:
            checks.append(Check("gateway", "skip", "no health_check tool"))
        else:
            data = _structured(health)
            if health.is_error or not isinstance(data, dict):
                checks.append(Check("gateway", "fail", f"health_check failed: {_text(health)[:200]}",
                                    "check the gateway's log"))
            elif data.get("database") != "up":
                checks.append(Check("gateway", "fail", "the gateway cannot reach its database",
                                    "check MCP_GATEWAY_DATABASE_URL and that PostgreSQL is up; tool calls are kept "
                                    "in memory (and spilled to disk) until it returns"))
            else:
                checks.append(Check("gateway", "ok", f"database up, tracking backlog {data.get('tracking_backlog')}"))
            checks.extend(console_check(data))
            checks.extend(budget_check(data, self.replicas))
        return checks

    def _client(self) -> Any:
        from fastmcp import Client
        from mcp_types import Implementation

        return Client(self.target.mcp_url, auth=self.token, mode="legacy", timeout=self.timeout,
                      verify=self.ssl_context,
                      client_info=Implementation(name="mcp-gateway-doctor", version=__version__))


_MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
                "MCP-Protocol-Version": "2025-06-18"}


def budget_check(health: dict[str, Any], replicas: int | None) -> list[Check]:
    """workers × replicas × connections per process against the live server's max_connections (docs/scaling.md)."""
    budget = health.get("connection_budget")
    if not isinstance(budget, dict) or "per_process" not in budget:
        return []
    try:
        workers, per_process = int(budget["workers"]), int(budget["per_process"])
        replicas = replicas if replicas is not None else int(budget["replicas"])
        available = int(budget["available"])
        max_connections = int(budget["max_connections"])
    except (KeyError, TypeError, ValueError):
        return [Check("budget", "warn", "the gateway reported an unreadable connection budget")]
    needed = workers * replicas * per_process
    shown = (f"{workers} worker(s) × {replicas} replica(s) × {per_process} connection(s) = {needed} of "
             f"{available} (max_connections {max_connections} minus reserved and headroom)")
    if needed > available:
        return [Check("budget", "fail", shown,
                      "lower MCP_GATEWAY_DB_POOL_SIZE or set MCP_GATEWAY_DB_CONNECTION_BUDGET, run fewer workers "
                      "or replicas, or raise max_connections (docs/scaling.md, \"Connection budget\")")]
    return [Check("budget", "ok", shown)]


def console_check(health: dict[str, Any]) -> list[Check]:
    """A WARN line when the gateway reports its SQL console's side channels open (no superuser at migrate)."""
    state = health.get("console_side_channels")
    if not isinstance(state, str) or state in ("closed", "unknown"):
        return []
    return [Check("console", "warn", f"the admin SQL console's database wall is incomplete ({state[:200]})",
                  "migrations ran without a PostgreSQL superuser: run `mcp-gateway migrate` once as a superuser "
                  "so statistics, sizes, set_config, pg_sleep and backend signals are revoked from the console "
                  "login (docs/admin-sql.md, \"Without a superuser\")")]


def _initialize(request_id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "mcp-gateway-doctor", "version": __version__}}}


def _challenge_param(header: str, name: str) -> str | None:
    marker = f'{name}="'
    start = header.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = header.find('"', start)
    return header[start:end] if end > start else None


def _structured(result: Any) -> Any:
    data = getattr(result, "structured_content", None)
    if isinstance(data, dict) and set(data) == {"result"}:
        data = data["result"]
    if data is None:
        try:
            data = json.loads(_text(result))
        except ValueError:
            return None
    return data


def _text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in getattr(result, "content", []) or [])


def _error(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:300]


def doctor_command(
    url: Annotated[str, typer.Option(help="The gateway's URL, e.g. https://gw.example.com/mcp")],
    token: Annotated[str, typer.Option(help="A bearer token to check with [MCP_GATEWAY_TOKEN]",
                                       envvar="MCP_GATEWAY_TOKEN", show_envvar=False)],
    timeout: Annotated[float, typer.Option(help="Seconds per network step", min=0.1, max=300)] = 10.0,
    replicas: Annotated[int | None, typer.Option(
        help="Gateway replicas you run against this database (default: the gateway's MCP_GATEWAY_REPLICAS); "
             "checked with its workers and pool against max_connections", min=1)] = None,
) -> None:
    """Check a deployment the way a client would: reachability, TLS, metadata, token, tools, whoami."""
    code = Doctor(url, token, timeout=timeout, replicas=replicas).run()
    if code:
        raise SystemExit(code)  # not typer.Exit: the CLI runs click with standalone_mode=False
