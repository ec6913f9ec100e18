"""Personal access tokens: format, hashing, and verification against a TokenStore.

Format: ``mcpgw_`` + 43 base62 characters of randomness (256 bits) + 6 base62 characters
of CRC32 over everything before them. The fixed prefix lets secret scanners find leaked
tokens; the checksum rejects typos and garbage before any database lookup. Only the
SHA-256 of the whole token string is stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from auth.errors import TokenRejected
from auth.principal import Principal, normalize_role
from auth.store import PatRecord, TokenStore

log = logging.getLogger("auth.pat")

PAT_PREFIX = "mcpgw_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SECRET_LEN = 43  # 43 * log2(62) > 256 bits
_CHECK_LEN = 6    # 62**6 > 2**32
PAT_LENGTH = len(PAT_PREFIX) + _SECRET_LEN + _CHECK_LEN
_PAT_RE = re.compile(rf"{PAT_PREFIX}[0-9A-Za-z]{{{_SECRET_LEN + _CHECK_LEN}}}")
DISPLAY_PREFIX_LEN = len(PAT_PREFIX) + 6  # stored in clear for humans ("mcpgw_AbC123")


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rest = divmod(number, 62)
        digits.append(_ALPHABET[rest])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECK_LEN)


def generate_pat() -> str:
    body = PAT_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_LEN))
    return body + _checksum(body)


def looks_like_pat(token: str) -> bool:
    """Has our prefix (so it is ours to judge, well-formed or not)."""
    return token.startswith(PAT_PREFIX)


def is_well_formed_pat(token: str) -> bool:
    if len(token) != PAT_LENGTH or not _PAT_RE.fullmatch(token):
        return False
    body, check = token[:-_CHECK_LEN], token[-_CHECK_LEN:]
    return secrets.compare_digest(_checksum(body), check)


def hash_pat(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def display_prefix(token: str) -> str:
    return token[:DISPLAY_PREFIX_LEN]


def principal_from_record(record: PatRecord) -> Principal:
    return Principal(
        user_id=record.user_id,
        tenant_id=record.tenant_id,
        email=record.email,
        name=record.name,
        role=normalize_role(record.role),
        scopes=tuple(record.scopes),
        token_kind="pat",
        token_id=record.token_id,
        subject=record.user_id,
        expires_at=record.expires_at,
    )


class PatVerifier:
    """Looks tokens up by hash and batches `last_used_at` updates (at most one write per interval).

    A database outage must not lock everyone out: while the store cannot answer, a token that
    verified within `outage_grace` seconds is accepted from its last known record (expiry and
    revocation as last seen still apply). Once the store answers again, it alone decides.
    """

    def __init__(self, store: TokenStore, *, flush_interval: float = 30.0, outage_grace: float = 900.0,
                 max_known: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._flush_interval = flush_interval
        self._outage_grace = outage_grace
        self._max_known = max_known
        self._clock = clock
        self._used: dict[str, datetime] = {}
        self._known: OrderedDict[bytes, tuple[PatRecord, float]] = OrderedDict()  # hash -> (record, seen)
        self._last_flush = clock()
        self._flushing: asyncio.Task[None] | None = None

    async def verify(self, token: str) -> Principal:
        if not is_well_formed_pat(token):
            raise TokenRejected("malformed personal access token")
        token_hash = hash_pat(token)
        try:
            record = await self.store.find_by_hash(token_hash)
        except Exception as exc:  # a database problem is never a 5xx
            record = self._last_known(token_hash)
            if record is None:
                log.warning("token store lookup failed: %s", type(exc).__name__)
                raise TokenRejected("token store unavailable") from None
            log.info("token store unavailable (%s): using the last known record", type(exc).__name__)
        else:
            self._remember(token_hash, record)
        if record is None:
            raise TokenRejected("unknown personal access token")
        now = datetime.now(UTC)
        if record.revoked_at is not None:
            raise TokenRejected("revoked personal access token")
        if record.expires_at is not None and record.expires_at <= now:
            raise TokenRejected("expired personal access token")
        try:
            principal = principal_from_record(record)
        except ValueError:
            raise TokenRejected("personal access token record is invalid") from None
        self.note_used(record.token_id, now)
        return principal

    def _remember(self, token_hash: bytes, record: PatRecord | None) -> None:
        if self._outage_grace <= 0:
            return
        if record is None:
            self._known.pop(token_hash, None)
            return
        self._known[token_hash] = (record, self._clock())
        self._known.move_to_end(token_hash)
        while len(self._known) > self._max_known:
            self._known.popitem(last=False)

    def _last_known(self, token_hash: bytes) -> PatRecord | None:
        known = self._known.get(token_hash)
        if known is None or self._clock() - known[1] > self._outage_grace:
            return None
        return known[0]

    def note_used(self, token_id: str, when: datetime | None = None) -> None:
        """Remember a use; a write happens at most every `flush_interval` seconds."""
        self._used[token_id] = when or datetime.now(UTC)
        if self._clock() - self._last_flush >= self._flush_interval and not self._flush_running():
            self._flushing = asyncio.get_running_loop().create_task(self.flush())

    def _flush_running(self) -> bool:
        return self._flushing is not None and not self._flushing.done()

    async def flush(self) -> None:
        self._last_flush = self._clock()
        if not self._used:
            return
        batch, self._used = self._used, {}
        try:
            await self.store.mark_used(batch)
        except Exception as exc:  # keep the uses for the next attempt
            log.warning("recording token use failed: %s", type(exc).__name__)
            for token_id, when in batch.items():
                self._used.setdefault(token_id, when)

    async def aclose(self) -> None:
        if self._flush_running():
            assert self._flushing is not None
            await self._flushing
        await self.flush()
