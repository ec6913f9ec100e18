"""Fair shares of the admin SQL console's connections between tenants.

A plain semaphore lets one tenant's flood hold every connection while other tenants'
queries queue behind it (and run into their deadlines). Here each tenant (auditors count
as one more key) may hold at most `per_key` of the `total` slots; a freed slot goes to the
next key in round-robin order among those waiting, so a flooding tenant waits behind its
own queries, not in front of everybody else's. Each key may have at most `queue_per_key`
queries waiting; more are refused at once (SlotsBusy) rather than piling up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class SlotsBusy(Exception):
    """Too many queries of this key are already waiting, or the wait took too long."""


class FairSlots:
    def __init__(self, total: int, per_key: int, queue_per_key: int) -> None:
        if total < 1 or per_key < 1 or queue_per_key < 0:
            raise ValueError("slots: total and per_key must be >= 1, queue_per_key >= 0")
        self.total = total
        self.per_key = min(per_key, total)
        self.queue_per_key = queue_per_key
        self._free = total
        self._running: dict[Hashable, int] = {}
        self._waiting: dict[Hashable, deque[asyncio.Future[None]]] = {}
        self._turns: deque[Hashable] = deque()  # keys with waiters, in round-robin order

    def running(self, key: Hashable) -> int:
        return self._running.get(key, 0)

    def waiting(self, key: Hashable) -> int:
        return len(self._waiting.get(key, ()))

    @asynccontextmanager
    async def slot(self, key: Hashable, *, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold one slot for `key` for the duration of the block (waiting fairly for it)."""
        if self._free > 0 and self.running(key) < self.per_key and not self._waiting.get(key):
            self._take(key)
        else:
            await self._wait(key, timeout)
        try:
            yield
        finally:
            self._release(key)

    def _take(self, key: Hashable) -> None:
        self._free -= 1
        self._running[key] = self.running(key) + 1

    def _release(self, key: Hashable) -> None:
        self._free += 1
        left = self.running(key) - 1
        if left:
            self._running[key] = left
        else:
            self._running.pop(key, None)
        self._dispatch()

    async def _wait(self, key: Hashable, timeout: float | None) -> None:
        queue = self._waiting.setdefault(key, deque())
        if len(queue) >= self.queue_per_key:
            if not queue:
                self._waiting.pop(key, None)
            raise SlotsBusy(f"{len(queue)} console queries of this tenant are already waiting")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(future)
        if key not in self._turns:
            self._turns.append(key)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except BaseException as exc:
            if future.done() and not future.cancelled():
                self._release(key)  # granted just as we gave up: hand it on
            else:
                future.cancel()
                self._forget(key, future)
            if isinstance(exc, TimeoutError):
                raise SlotsBusy(f"no console connection became free within {timeout:g} s") from None
            raise

    def _forget(self, key: Hashable, future: asyncio.Future[None]) -> None:
        queue = self._waiting.get(key)
        if queue is not None:
            try:
                queue.remove(future)
            except ValueError:
                pass
            if not queue:
                self._waiting.pop(key, None)
                try:
                    self._turns.remove(key)
                except ValueError:
                    pass

    def _dispatch(self) -> None:
        """Give free slots to waiting keys, one at a time in turn, skipping keys at their share."""
        while self._free > 0 and self._turns:
            for _ in range(len(self._turns)):
                key = self._turns[0]
                self._turns.rotate(-1)
                if self.running(key) < self.per_key:
                    break
            else:
                return  # every waiting key is at its share
            queue = self._waiting[key]
            future = queue.popleft()
            if not queue:
                self._waiting.pop(key, None)
                self._turns.remove(key)
            if future.done():  # cancelled meanwhile
                continue
            self._take(key)
            future.set_result(None)
