"""The browser link flow of a per_user_oauth upstream: authorization code + PKCE, per user.

1. The signed-in dashboard calls `POST /api/credentials/{upstream}/oauth` (bearer-authenticated).
   The gateway makes a random state and a PKCE verifier, stores SHA-256(state) and the encrypted
   verifier in gateway.upstream_link_states under the caller's own identity (10 minutes, single
   use), and answers the authorization server's URL.
2. The browser signs in at the upstream's authorization server, which redirects to
   `GET /connections/callback?code=...&state=...`.
3. The callback reads tenant and user from the state (they only select the vault identity: a
   forged one finds no matching hash), consumes the state once, redeems the code with the
   verifier, stores the tokens encrypted, and redirects to /dashboard#connections.

CSRF: the callback acts only for a state the signed-in user's own API call created; an attacker
cannot make a victim's browser complete a flow with the attacker's code, because the state the
attacker holds is bound to the attacker (the tokens would land in the attacker's own row).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from auth import Principal
from gateway.credentials.oauth import OAuthError, discover, token_request

if TYPE_CHECKING:
    from gateway.credentials.install import Credentials

log = logging.getLogger("mcp_gateway.credentials")

STATE_SECONDS = 600
CALLBACK_PATH = "/connections/callback"


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


def _hash(state: str) -> bytes:
    return hashlib.sha256(state.encode()).digest()


class LinkFlow:
    def __init__(self, credentials: Credentials, public_url: str) -> None:
        self.credentials = credentials
        self.public_url = public_url.rstrip("/")
        self.redirect_uri = self.public_url + CALLBACK_PATH

    async def start(self, principal: Principal, upstream: str) -> str:
        """The authorization URL for this user and upstream (raises OAuthError)."""
        config = self.credentials.upstreams[upstream]
        assert config.oauth is not None and config.oauth.client_id is not None
        meta = await discover(config)
        state = f"{_b64(principal.tenant_id)}.{_b64(principal.user_id)}.{secrets.token_urlsafe(32)}"
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        store = self.credentials.store
        sealed = store.keyring.encrypt(verifier.encode(), principal.tenant_id, principal.user_id, f"state:{upstream}")
        async with store.db.as_vault(principal.tenant_id, principal.user_id) as conn:
            await conn.execute(
                "INSERT INTO gateway.upstream_link_states (tenant_id, user_id, state_hash, upstream, verifier,"
                " expires_at) VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s))",
                (principal.tenant_id, principal.user_id, _hash(state), upstream, sealed, STATE_SECONDS))
        query = {"response_type": "code", "client_id": config.oauth.client_id, "redirect_uri": self.redirect_uri,
                 "state": state, "code_challenge": challenge, "code_challenge_method": "S256",
                 "resource": config.oauth.resource or config.url or ""}
        if config.oauth.scopes:
            query["scope"] = " ".join(config.oauth.scopes)
        separator = "&" if "?" in meta.authorization_endpoint else "?"
        return meta.authorization_endpoint + separator + urlencode(query)

    async def callback(self, request: Request) -> Response:
        state = request.query_params.get("state", "")
        code = request.query_params.get("code", "")
        error = request.query_params.get("error")
        try:
            tenant_b64, user_b64, _ = state.split(".", 2)
            tenant_id, user_id = _unb64(tenant_b64), _unb64(user_b64)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return _refused("unknown or expired link request; start again from the dashboard")
        if not tenant_id or not user_id or len(state) > 2000:
            return _refused("unknown or expired link request; start again from the dashboard")
        store = self.credentials.store
        async with store.db.as_vault(tenant_id, user_id) as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                "UPDATE gateway.upstream_link_states SET consumed_at = now()"
                " WHERE tenant_id = %s AND user_id = %s AND state_hash = %s AND consumed_at IS NULL"
                " AND expires_at > now() RETURNING upstream, verifier", (tenant_id, user_id, _hash(state)))
            row = await cur.fetchone()
        if row is None:  # forged, replayed or expired: one answer for all
            return _refused("unknown or expired link request; start again from the dashboard")
        upstream, sealed = row["upstream"], bytes(row["verifier"])
        config = self.credentials.upstreams.get(upstream)
        if config is None:
            return _refused(f"upstream {upstream!r} no longer uses per-user OAuth")
        if error or not code:
            return _back(f"{upstream}: the sign-in was not completed")
        verifier = store.keyring.decrypt(sealed, tenant_id, user_id, f"state:{upstream}").decode()
        try:
            secret = await token_request(config, {"grant_type": "authorization_code", "code": code,
                                                  "redirect_uri": self.redirect_uri, "code_verifier": verifier})
        except OAuthError as exc:
            log.warning("linking %s for %s/%s failed: %s", upstream, tenant_id, user_id, exc,
                        extra={"event": "credential_link_failed", "upstream": upstream})
            return _back(f"{upstream}: the authorization server refused the sign-in")
        await store.put(tenant_id, user_id, upstream, "per_user_oauth", secret)
        self.credentials.forget(tenant_id, user_id, upstream)
        log.info("linked %s for %s/%s", upstream, tenant_id, user_id,
                 extra={"event": "credential_linked", "upstream": upstream})
        return _back(None)


def _back(problem: str | None) -> Response:
    suffix = "?" + urlencode({"connection_error": problem}) if problem else ""
    return RedirectResponse(f"/dashboard{suffix}#connections", status_code=303,
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def _refused(message: str) -> Response:
    return PlainTextResponse(message + "\n", status_code=400, headers={"Cache-Control": "no-store"})
