"""One AccessToken per bearer token and principal, shared by every request that presents that token.

The MCP SDK keeps a few requests of every open handshake-era session alive: its session task, its
dispatcher and its idle timer each hold the contextvars of a request they ran for (the `initialize`, the
last message, the last request), and with them that request's `AuthenticatedUser` and `AccessToken`.
Built anew per request, the token and its claims (the principal, dumped) were some 5 KB of every open
session. Equal inputs make an equal token, so handing every request the same one changes nothing a
request can see; it is frozen, so no request can change it under the others.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from fastmcp.server.auth import AccessToken
from pydantic import ConfigDict, PrivateAttr

from auth.principal import Principal


class SharedAccessToken(AccessToken):
    """An AccessToken that may be handed to many requests (its fields cannot be reassigned), with the
    principal it was made for at hand (no claims to parse again on every use)."""

    model_config = ConfigDict(frozen=True)
    _principal: Principal | None = PrivateAttr(default=None)

    @property
    def principal(self) -> Principal | None:
        # Read from pydantic's store of private attributes: `self._principal` would miss the instance and
        # go through BaseModel.__getattr__, a Python-level fallback, on every request.
        private = self.__pydantic_private__
        return private.get("_principal") if private else None


class _Issued(NamedTuple):
    principal: Principal
    leeway: float
    access: SharedAccessToken


class SharedAccessTokens:
    """The last AccessToken made for each token (by its SHA-256), reused while the principal and leeway
    it was made from equal the current ones. At most `max_entries` tokens, least recently used dropped
    first. Not thread-safe (one event loop)."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._issued: OrderedDict[bytes, _Issued] = OrderedDict()

    def get(self, token: str, principal: Principal, leeway: float,
            make: Callable[[str, Principal, float], SharedAccessToken]) -> SharedAccessToken:
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        issued = self._issued.get(key)
        # the same principal object (the authenticator's cache) is the common case: no field-by-field compare
        if issued is not None and issued.leeway == leeway and (issued.principal is principal
                                                               or issued.principal == principal):
            self._issued.move_to_end(key)
            return issued.access
        access = make(token, principal, leeway)
        self._issued[key] = _Issued(principal, leeway, access)
        self._issued.move_to_end(key)
        while len(self._issued) > self._max:
            self._issued.popitem(last=False)
        return access

    def clear(self) -> None:
        self._issued.clear()

    def __len__(self) -> int:
        return len(self._issued)
