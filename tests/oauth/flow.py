"""Drives the authorization server the way a browser and an OAuth client do: real HTTP, the
pages followed by parsing their forms, nothing reached around."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

CSRF = re.compile(r"name=csrf value='([^']+)'")
REDIRECT = "http://127.0.0.1:7777/callback"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@dataclass
class Authorized:
    code: str
    verifier: str
    redirect_uri: str
    params: dict[str, str]


class Flow:
    def __init__(self, base_url: str, log: Any = None) -> None:
        self.base_url = base_url
        self.log = log or (lambda: "")
        self.mcp_url = base_url + "/mcp"
        self.browser = httpx.Client(base_url=base_url, follow_redirects=False, timeout=30)

    def close(self) -> None:
        self.browser.close()

    def metadata(self) -> dict[str, Any]:
        return httpx.get(self.base_url + "/.well-known/oauth-authorization-server", timeout=10).json()

    def register(self, redirect_uris: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        body = {"client_name": "Test client", "redirect_uris": redirect_uris or [REDIRECT],
                "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"],
                **extra}
        response = httpx.post(self.base_url + "/oauth/register", json=body, timeout=10)
        assert response.status_code == 201, response.text + self.log()[-3000:]
        return response.json()

    def authorize(self, client_id: str, *, redirect_uri: str = REDIRECT, challenge: str | None = None,
                  method: str | None = "S256", state: str = "st-123", resource: str | None = None,
                  extra: dict[str, str] | None = None) -> httpx.Response:
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": state,
                  "resource": resource or self.mcp_url, "scope": "mcp"}
        if challenge is not None:
            params["code_challenge"] = challenge
        if method is not None:
            params["code_challenge_method"] = method
        params.update(extra or {})
        return self.browser.get("/oauth/authorize?" + urlencode(params))

    def csrf(self, path: str) -> str:
        page = self.browser.get(path)
        assert page.status_code == 200, page.text
        assert page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        found = CSRF.search(page.text)
        assert found, page.text
        return found.group(1)

    def login(self, token: str) -> httpx.Response:
        csrf = self.csrf("/oauth/login")
        return self.browser.post("/oauth/login", data={"csrf": csrf, "token": token})

    def consent(self, decision: str = "approve", remember: bool = False) -> httpx.Response:
        csrf = self.csrf("/oauth/consent")
        data = {"csrf": csrf, "decision": decision}
        if remember:
            data["remember"] = "1"
        return self.browser.post("/oauth/consent", data=data)

    def full_authorization(self, client_id: str, token: str, *, remember: bool = False,
                           redirect_uri: str = REDIRECT) -> Authorized:
        verifier, challenge = pkce()
        start = self.authorize(client_id, challenge=challenge, redirect_uri=redirect_uri)
        assert start.status_code == 303 and start.headers["location"] == "/oauth/login", start.text
        signed_in = self.login(token)
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/oauth/consent", signed_in.text
        answer = self.consent("approve", remember=remember)
        assert answer.status_code in (302, 303), answer.text
        location = answer.headers["location"]
        assert location.startswith(redirect_uri.split("?")[0].rsplit(":", 1)[0]), location
        params = query_of(location)
        return Authorized(params["code"], verifier, redirect_uri, params)

    def token(self, data: dict[str, str], auth: tuple[str, str] | None = None) -> httpx.Response:
        return httpx.post(self.base_url + "/oauth/token", data=data, auth=auth, timeout=30)

    def exchange(self, client_id: str, authorized: Authorized, **overrides: str) -> httpx.Response:
        data = {"grant_type": "authorization_code", "code": authorized.code, "redirect_uri": authorized.redirect_uri,
                "client_id": client_id, "code_verifier": authorized.verifier, "resource": self.mcp_url}
        data.update(overrides)
        return self.token({k: v for k, v in data.items() if v != ""})

    def refresh(self, client_id: str, refresh_token: str) -> httpx.Response:
        return self.token({"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id,
                           "resource": self.mcp_url})
