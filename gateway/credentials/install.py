"""Wiring: the key ring, store and resolver for the upstreams that use per-user credentials."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config import UpstreamConfig
from gateway.credentials.keys import Keyring
from gateway.credentials.resolver import CredentialResolver
from gateway.credentials.store import CredentialStore
from gateway.errors import UserError

if TYPE_CHECKING:
    from auth import Principal
    from gateway.mcp.upstreams import Upstream
    from gateway.settings import Settings
    from gateway.store.db import Database


@dataclass
class Credentials:
    """What the API and the link flow need: the store, the resolver, the per-user upstreams."""

    store: CredentialStore
    resolver: CredentialResolver
    upstreams: dict[str, UpstreamConfig]
    live: dict[str, Upstream] = field(default_factory=dict)

    def forget(self, tenant_id: str, user_id: str, upstream: str) -> None:
        """Close the user's client of that upstream now (revoke/unlink/re-link takes effect at once)."""
        live = self.live.get(upstream)
        if live is not None:
            live.forget_user(tenant_id, user_id)
        self.resolver.forget_key(tenant_id, user_id, upstream)


def build_credentials(settings: Settings, db: Database, upstreams: Sequence[Upstream],
                      principal_of: Callable[[], Principal | None]) -> Credentials | None:
    """The vault for the upstreams in a per-user mode (None when there are none)."""
    per_user = [u for u in upstreams if u.config.per_user]
    keyring = Keyring.from_settings(settings)
    needs_key = [u for u in per_user if u.config.credentials != "token_exchange"]
    if needs_key and keyring is None:
        first = needs_key[0].config
        raise UserError(f"upstream {first.name!r} uses credentials = {first.credentials!r}, which stores each"
                        " user's credential encrypted: set MCP_GATEWAY_CREDENTIALS_KEY or"
                        " MCP_GATEWAY_CREDENTIALS_KEY_FILE (e.g. `openssl rand -base64 32`)")
    if not per_user:
        return None
    if keyring is None:  # token_exchange only: nothing is stored, but the store type wants a ring
        keyring = Keyring((b"\0" * 32,))
    store = CredentialStore(db, keyring)
    resolver = CredentialResolver(store, settings.resolved_public_url)
    credentials = Credentials(store, resolver, {u.name: u.config for u in per_user},
                              {u.name: u for u in per_user})
    for upstream in per_user:
        upstream.resolver = resolver
        upstream.principal_of = principal_of
    return credentials
