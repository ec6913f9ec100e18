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
from dataclasses import dataclass
from datetime import UTC, datetime

from auth.errors import StoreUnavailable, TokenRejected
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


@dataclass(frozen=True)
class _Known:
    record: PatRecord
    principal: Principal | None  # None: the record cannot make a principal (judged "invalid" on use)
    read_at: float               # clock() when the store answered


# How long a request for a known token whose record is stale waits for the store's fresh answer before it
# is served from that record: long enough for a healthy database, short enough never to stall a caller.
REVALIDATE_WAIT = 0.25
# A token in use is looked up again in the background once its record is this far into `fresh_for`, so
# that steady traffic finds it fresh and never waits on the store (nor leaves the front door's short road).
REFRESH_AHEAD = 0.75


def _principal_or_none(record: PatRecord) -> Principal | None:
    try:
        return principal_from_record(record)
    except ValueError:
        return None


class PatVerifier:
    """Looks tokens up by hash, caches what the store said, and batches `last_used_at` updates.

    One cache, three ages for a token's record (what the store last said about it):
    - younger than `fresh_for`: used as is; past REFRESH_AHEAD of it, also looked up again in the
      background, so a token in steady use is renewed before it goes stale;
    - younger than `outage_grace`: looked up again. A store that answers within REVALIDATE_WAIT
      decides (a revocation bites at once, however long the token was idle); a slower, hung or failing
      one does not hold the caller: the record is used and the lookup finishes in the background
      (stale-while-revalidate), and until a lookup answers quickly again, stale records are served
      without waiting at all;
    - older, or never seen: the caller waits for the lookup, at most `store_timeout` seconds, then
      gets `StoreUnavailable` (503), never a refusal: the token may be good.
    Lookups are single-flight: one query per token hash at a time, every other request for that
    token awaits it. Expiry is judged on every use, against the clock.
    """

    def __init__(self, store: TokenStore, *, flush_interval: float = 30.0, outage_grace: float = 900.0,
                 fresh_for: float = 2.0, store_timeout: float = 1.5, retry_after: int = 5,
                 max_known: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._flush_interval = flush_interval
        self._outage_grace = outage_grace
        self._fresh_for = fresh_for
        self._store_timeout = store_timeout
        self._retry_after = retry_after
        self._max_known = max_known
        self._clock = clock
        self._used: dict[str, datetime] = {}
        self._known: OrderedDict[bytes, _Known] = OrderedDict()
        self._lookups: dict[bytes, tuple[asyncio.Task[PatRecord | None], float]] = {}  # hash -> (task, started)
        self._store_slow = False  # set by a failed or slow lookup, cleared by a quick answer
        self._last_flush = clock()
        self._flushing: asyncio.Task[None] | None = None

    async def verify(self, token: str) -> Principal:
        token_hash = hash_pat(token)
        known = self._known.get(token_hash)  # only well-formed tokens the store knew are ever in here
        if known is not None:
            age = self._clock() - known.read_at
            if age < self._fresh_for:
                if age >= self._fresh_for * REFRESH_AHEAD and not self._store_slow:
                    self._lookup(token_hash)  # single-flight; its answer renews the record (or revokes it)
                return self._judge(known)
            if age < self._outage_grace:
                return self._judge(await self._revalidate(token_hash, known))
        if not is_well_formed_pat(token):
            raise TokenRejected("malformed personal access token")
        record = await self._wait_for_lookup(token_hash)
        if record is None:
            raise TokenRejected("unknown personal access token")
        known = self._known.get(token_hash) or _Known(record, _principal_or_none(record), self._clock())
        return self._judge(known)

    def fresh(self, token: str) -> bool:
        """`verify(token)` would answer from a fresh record, with a principal (no lookup, no refusal)."""
        known = self._known.get(hash_pat(token))
        if known is None or self._clock() - known.read_at >= self._fresh_for or known.principal is None:
            return False
        record = known.record
        return record.revoked_at is None and (record.expires_at is None or record.expires_at > datetime.now(UTC))

    def _judge(self, known: _Known) -> Principal:
        record, now = known.record, datetime.now(UTC)
        if record.revoked_at is not None:
            raise TokenRejected("revoked personal access token")
        if record.expires_at is not None and record.expires_at <= now:
            raise TokenRejected("expired personal access token")
        if known.principal is None:
            raise TokenRejected("personal access token record is invalid")
        self.note_used(record.token_id, now)
        return known.principal

    # -- lookups -------------------------------------------------------------------------------
    async def _revalidate(self, token_hash: bytes, stale: _Known) -> _Known:
        """The store's fresh word if it gives it quickly, else the stale record (lookup goes on)."""
        task = self._lookup(token_hash)
        if task is None or self._store_slow:
            return stale  # the store is hung, failing or slow: do not make this caller wait on it
        done, _ = await asyncio.wait({task}, timeout=REVALIDATE_WAIT)
        if not done:
            self._mark_slow(f"no answer within {REVALIDATE_WAIT:g} s")
            return stale
        if task.cancelled() or task.exception() is not None:
            return stale
        record = task.result()
        if record is None:
            raise TokenRejected("unknown personal access token")
        return self._known.get(token_hash) or _Known(record, _principal_or_none(record), self._clock())

    def _mark_slow(self, why: str) -> None:
        if not self._store_slow:
            log.warning("token store slow or unavailable (%s): serving known tokens from their last record", why)
        self._store_slow = True

    def _lookup(self, token_hash: bytes) -> asyncio.Task[PatRecord | None] | None:
        """The one lookup for this hash; None if the running one is past its deadline (store hung)."""
        running = self._lookups.get(token_hash)
        if running is not None:
            task, started = running
            if self._clock() - started > self._store_timeout:
                return None  # still unwinding a timed-out query: do not pile another on a hung store
            return task
        task = asyncio.get_running_loop().create_task(self._fetch(token_hash))
        self._lookups[token_hash] = (task, self._clock())
        task.add_done_callback(lambda done: self._lookup_done(token_hash, done))
        return task

    def _lookup_done(self, token_hash: bytes, task: asyncio.Task[PatRecord | None]) -> None:
        if self._lookups.get(token_hash, (None, 0.0))[0] is task:
            del self._lookups[token_hash]
        if not task.cancelled():
            task.exception()  # retrieved here: a background refresh may fail with nobody awaiting it

    async def _fetch(self, token_hash: bytes) -> PatRecord | None:
        started = self._clock()
        try:
            # The store bounds its own wait (pool checkout, statement_timeout); this bounds a store that
            # cannot even be told to stop (a stopped server, a black-holed network).
            record = await asyncio.wait_for(self.store.find_by_hash(token_hash), self._store_timeout + 0.5)
        except Exception as exc:
            self._mark_slow(type(exc).__name__)
            raise
        if self._store_slow and self._clock() - started < REVALIDATE_WAIT:
            log.warning("token store answers again")
            self._store_slow = False
        self._remember(token_hash, record)
        return record

    async def _wait_for_lookup(self, token_hash: bytes) -> PatRecord | None:
        task = self._lookup(token_hash)
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=self._store_timeout)
            if done and not task.cancelled() and task.exception() is None:
                return task.result()
        raise StoreUnavailable("token store unavailable", self._retry_after)

    def _remember(self, token_hash: bytes, record: PatRecord | None) -> None:
        if record is None:  # unknown now: nothing to serve it from (the caller caches the refusal)
            self._known.pop(token_hash, None)
            return
        self._known[token_hash] = _Known(record, _principal_or_none(record), self._clock())
        self._known.move_to_end(token_hash)
        while len(self._known) > self._max_known:
            self._known.popitem(last=False)

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
