"""The authorization server's ES256 signing keys, kept in the database so every replica signs
and verifies with the same set.

Rotation: a key signs for `rotation` (MCP_GATEWAY_OAUTH_KEY_ROTATION_DAYS). A day before it
stops signing, its successor is created and published in the JWKS, so verifiers that cache
the JWKS know the new key before the first token it signs. A key leaves the JWKS once every
token it signed has expired. Creation takes an advisory lock: replicas starting together
make one key, not several.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from psycopg.rows import scalar_row

from gateway.oauth.store import OAuthStore
from gateway.store.db import Database

_LOCK = 0x6D6367_6B6579  # advisory lock id: "mcg key"
PREPUBLISH = timedelta(days=1)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey
    public_jwk: dict[str, Any]
    signs: bool  # not yet past rotate_at


class SigningKeys:
    """Also the `auth.local_tokens.LocalTokenSource` the verifier uses (keys + revocation state)."""

    def __init__(self, db: Database, store: OAuthStore, *, rotation: timedelta, token_ttl: int,
                 reload_interval: float = 60.0) -> None:
        self.db = db
        self.store = store
        self.rotation = rotation
        self.token_ttl = token_ttl
        self.reload_interval = reload_interval
        self._keys: dict[str, SigningKey] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _reload(self, *, ensure: bool) -> None:
        async with self._lock:
            async with self.db.as_system("oauth") as conn:
                if ensure:
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                    upcoming = await (await conn.cursor(row_factory=scalar_row).execute(
                        "SELECT count(*) FROM gateway.oauth_signing_keys WHERE rotate_at > now() + %s", (PREPUBLISH,)
                    )).fetchone()
                    if upcoming == 0:
                        await self._create(conn)
                cur = await conn.execute(
                    "SELECT kid, private_pem, public_jwk, rotate_at > now() FROM gateway.oauth_signing_keys"
                    " WHERE retire_at > now() ORDER BY created_at")
                rows = await cur.fetchall()
            keys = {}
            for kid, pem, jwk, signs in rows:
                private = serialization.load_pem_private_key(pem.encode(), password=None)
                assert isinstance(private, ec.EllipticCurvePrivateKey)
                keys[kid] = SigningKey(kid, private, jwk if isinstance(jwk, dict) else json.loads(jwk), bool(signs))
            self._keys = keys
            self._loaded_at = time.monotonic()

    async def _create(self, conn: Any) -> None:
        private = ec.generate_private_key(ec.SECP256R1())
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        kid = secrets.token_urlsafe(12)
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
        jwk.update({"kid": kid, "alg": "ES256", "use": "sig"})
        await conn.execute(
            "INSERT INTO gateway.oauth_signing_keys (kid, private_pem, public_jwk, rotate_at, retire_at)"
            " VALUES (%s, %s, %s, now() + %s, now() + %s + make_interval(secs => %s) + interval '1 hour')",
            (kid, pem, json.dumps(jwk), self.rotation, self.rotation, self.token_ttl))

    async def ensure(self) -> None:
        """Make sure a signing key (and its successor, near rotation) exists; load the set."""
        await self._reload(ensure=True)

    async def _fresh(self) -> dict[str, SigningKey]:
        if time.monotonic() - self._loaded_at > self.reload_interval:
            await self._reload(ensure=True)
        return self._keys

    async def signing_key(self) -> SigningKey:
        """The oldest key that still signs (its successor is published but waits its turn)."""
        for key in (await self._fresh()).values():
            if key.signs:
                return key
        await self._reload(ensure=True)
        return next(k for k in self._keys.values() if k.signs)

    async def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk for key in (await self._fresh()).values()]}

    # --- auth.local_tokens.LocalTokenSource ---------------------------------------------------
    async def public_key(self, kid: str) -> Any | None:
        keys = await self._fresh()
        if kid not in keys and time.monotonic() - self._loaded_at > 5.0:
            await self._reload(ensure=False)  # a key another replica just created
            keys = self._keys
        key = keys.get(kid)
        return key.private_key.public_key() if key else None

    async def family_revoked(self, family_id: str) -> bool:
        try:
            return await self.store.family_revoked(family_id)
        except ValueError:  # not a uuid
            return True
