"""Who is calling. Imports nothing from `gateway`."""

from auth.principal import Principal, Role, TokenKind, normalize_role

__all__ = ["Principal", "Role", "TokenKind", "normalize_role"]
