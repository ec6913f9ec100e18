"""Who is calling. Imports nothing from `gateway`.

Light names (Principal, settings, errors, PAT helpers) import eagerly; the FastMCP and
Starlette pieces load on first use, so `from auth import Principal` stays cheap.
"""

from typing import TYPE_CHECKING, Any

from auth.errors import AuthConfigError, StoreUnavailable, TokenRejected
from auth.principal import PRIVILEGED_ROLES, ROLES, Principal, Role, TokenKind, normalize_role
from auth.settings import AuthSettings
from auth.store import PatRecord, TokenStore

if TYPE_CHECKING:
    from auth.authenticator import Authenticator
    from auth.provider import GatewayAuth, GatewayTokenVerifier, current_principal
    from auth.starlette import require_principal

__all__ = [
    "PRIVILEGED_ROLES", "ROLES",
    "AuthConfigError", "AuthSettings", "Authenticator", "GatewayAuth", "GatewayTokenVerifier",
    "PatRecord", "Principal", "Role", "StoreUnavailable", "TokenKind", "TokenRejected", "TokenStore",
    "current_principal", "normalize_role", "require_principal",
]

_LAZY = {
    "Authenticator": "auth.authenticator",
    "GatewayAuth": "auth.provider",
    "GatewayTokenVerifier": "auth.provider",
    "current_principal": "auth.provider",
    "require_principal": "auth.starlette",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'auth' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
