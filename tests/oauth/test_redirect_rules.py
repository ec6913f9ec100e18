"""Redirect URI rules (pure functions): exact match, RFC 8252 loopback ports, nothing else."""

from __future__ import annotations

from urllib.parse import urlsplit

from hypothesis import given
from hypothesis import strategies as st

from gateway.oauth.clients import allowed_scope, redirect_uri_allowed, redirect_uri_problem

REGISTERED = ("http://127.0.0.1/callback", "https://app.example/cb", "cursor://anysphere.cursor-mcp/oauth/callback")


@given(st.text(max_size=200))
def test_anything_else_is_refused(uri: str) -> None:
    allowed = redirect_uri_allowed(REGISTERED, uri)
    if allowed and uri not in REGISTERED:
        parts = urlsplit(uri)  # only a port change on the loopback entry is tolerated
        assert parts.scheme == "http" and parts.hostname == "127.0.0.1" and parts.path == "/callback"
        assert not parts.query and not parts.fragment and parts.username is None


@given(st.integers(min_value=1, max_value=65535))
def test_loopback_any_port(port: int) -> None:
    assert redirect_uri_allowed(REGISTERED, f"http://127.0.0.1:{port}/callback")
    assert not redirect_uri_allowed(REGISTERED, f"http://127.0.0.1:{port}/callback/x")
    assert not redirect_uri_allowed(REGISTERED, f"https://app.example:{port}/cb")  # not loopback: exact only


def test_lookalikes_refused() -> None:
    for uri in ("http://127.0.0.1.evil.example/callback", "http://127.0.0.1@evil.example/callback",
                "http://evil.example/callback#http://127.0.0.1/callback", "https://app.example/cb/",
                "https://app.example/cb?next=x", "HTTPS://app.example/cb", "cursor://anysphere.cursor-mcp/oauth",
                "http://localhost/callback", "http://[::1]/callback", "https://app.example/cb#"):
        assert not redirect_uri_allowed(REGISTERED, uri), uri


def test_registration_rules() -> None:
    assert redirect_uri_problem("http://127.0.0.1:3000/cb") is None
    assert redirect_uri_problem("cursor://anysphere.cursor-mcp/oauth/callback") is None
    assert redirect_uri_problem("com.example.app:/oauth2redirect") is None
    for bad in ("javascript:alert(1)", "data:text/html,x", "file:///etc/passwd", "http://evil.example/cb",
                "https://a.example/cb#f", "relative/path", "", "x" * 3000, None, 7):
        assert redirect_uri_problem(bad) is not None, bad


def test_scopes_are_narrowed_not_refused() -> None:
    assert allowed_scope(None) == "mcp"
    assert allowed_scope("openid mcp claudeai") == "mcp"
    assert allowed_scope("claudeai") == "mcp"
