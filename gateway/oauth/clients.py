"""The client model authlib works with, and the redirect URI rules.

Redirect URIs match exactly, with one relaxation from RFC 8252 §7.3: for a loopback
redirect (http://127.0.0.1, http://[::1], http://localhost) the port may differ, because
native clients listen on whatever port is free. Private-use schemes (`cursor://…`,
`com.example.app:/cb`) match exactly. Schemes that run code or read files never register.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin

from gateway.oauth.store import ClientRow, digest

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "[::1]", "::1", "localhost"})
FORBIDDEN_SCHEMES = frozenset({"javascript", "data", "file", "vbscript", "about", "blob", "filesystem"})
SUPPORTED_SCOPES = ("mcp",)


def redirect_uri_problem(uri: object) -> str | None:
    """Why `uri` cannot be registered as a redirect URI (None: it can)."""
    if not isinstance(uri, str) or not uri or len(uri) > 2000:
        return "redirect URI must be a non-empty string of at most 2000 characters"
    try:
        parts = urlsplit(uri)
    except ValueError:
        return f"redirect URI is not a URI: {uri!r}"
    scheme = parts.scheme.lower()
    if not scheme:
        return f"redirect URI has no scheme: {uri!r}"
    if scheme in FORBIDDEN_SCHEMES:
        return f"redirect URI scheme {scheme!r} is not allowed"
    if parts.fragment or "#" in uri:
        return "redirect URI must not contain a fragment"
    if scheme == "http" and (parts.hostname or "") not in {"127.0.0.1", "::1", "localhost"}:
        return "http redirect URIs are allowed for loopback addresses only"
    if scheme in ("http", "https") and not parts.netloc:
        return f"redirect URI has no host: {uri!r}"
    return None


def _loopback_match(registered: str, presented: str) -> bool:
    try:
        a, b = urlsplit(registered), urlsplit(presented)
        a_port, b_port = a.port, b.port  # noqa: F841 - ValueError on a malformed port
    except ValueError:
        return False
    return (a.scheme == b.scheme == "http" and a.hostname == b.hostname and a.hostname is not None
            and (a.hostname in LOOPBACK_HOSTS) and a.path == b.path and a.query == b.query
            and not b.fragment and b.username is None and b.password is None)


def redirect_uri_allowed(registered: tuple[str, ...], presented: str) -> bool:
    if not isinstance(presented, str) or "#" in presented:
        return False
    return any(presented == uri or _loopback_match(uri, presented) for uri in registered)


def allowed_scope(requested: str | None, client_scope: str | None = None) -> str:
    """The scopes we grant: the supported ones requested (unknown ones are dropped, not an error,
    because clients copy scopes from elsewhere); nothing requested means all supported."""
    supported = set(SUPPORTED_SCOPES)
    if client_scope:
        supported &= set(client_scope.split())
    wanted = [s for s in (requested or "").split() if s in supported]
    return " ".join(dict.fromkeys(wanted)) if wanted else " ".join(sorted(supported))


class OAuthClient(ClientMixin):
    def __init__(self, row: ClientRow) -> None:
        self.row = row
        self.client_id = row.client_id

    @property
    def display_name(self) -> str:
        return self.row.client_name or self.row.client_id

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None  # OAuth 2.1: redirect_uri is always sent and compared

    def get_allowed_scope(self, scope: str | None) -> str:
        return allowed_scope(scope, self.row.scope)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri_allowed(self.row.redirect_uris, redirect_uri)

    def check_client_secret(self, client_secret: str) -> bool:
        return self.row.secret_hash is not None and hmac.compare_digest(digest(client_secret), self.row.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.row.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.row.grant_types
