"""Waiting for a condition by polling it, with a deadline and a message that says what was awaited."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition",
             interval: float = 0.05) -> Any:
    """Call `predicate()` until it returns something truthy and return that (blocking)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def poll(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition", interval: float = 0.1,
               *, in_thread: bool = False) -> Any:
    """Await `check()` (a coroutine function or a plain callable) until it is truthy and return it.

    in_thread=True runs a blocking check (a database query) in a thread, so the event loop's
    other tasks (clients under load) keep running meanwhile.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await asyncio.to_thread(check) if in_thread else check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)
