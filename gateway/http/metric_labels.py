"""Tool-name label values for metrics, bounded whatever names callers send.

A caller chooses the tool name of every tools/call, including names of tools that do not exist;
labelling each one would let any token holder mint time series until the scraper falls over. So a
name gets a label of its own only when it is a real tool:
- it is in the server's tool registry (listed in the background: at start, then at most every
  `refresh_interval` seconds when an unregistered name shows up or /metrics is scraped), or
- a call to it succeeded (it ran, so it exists; covers tools listed after the last refresh).
Every other name counts as `_unknown` (calls to missing tools, hidden tools' denials look the same
as missing ones), and registered names beyond `cap` count as `_other`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from gateway.tasks import cancel_and_wait

log = logging.getLogger("mcp_gateway")

MAX_TOOL_LABELS = 500
OTHER = "_other"        # a real tool beyond the cap
UNKNOWN = "_unknown"    # a name that is not (yet) known to be a tool
NO_TOOL = "-"           # a record without a tool name

ToolNames = Callable[[], Awaitable[Iterable[str]]]


def registry_names(mcp: Any) -> ToolNames:
    """Every tool name the FastMCP server `mcp` serves, without any caller's filtering."""

    async def names() -> list[str]:
        return [tool.name for tool in await mcp.list_tools(run_middleware=False)]

    return names


class ToolLabels:
    name = "tool_labels"  # a Component (gateway/wiring.py): refreshed from the tool registry in the background

    def __init__(self, cap: int = MAX_TOOL_LABELS, refresh_interval: float = 30.0) -> None:
        self.cap = cap
        self.refresh_interval = refresh_interval
        self.source: ToolNames | None = None
        self._labels: set[str] = set()
        self._registered: frozenset[str] = frozenset()
        self._refreshed_at = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def label(self, name: str | None, status: str) -> str:
        if name is None:
            return NO_TOOL
        if name in self._labels:
            return name
        if status == "success" or name in self._registered:
            if len(self._labels) >= self.cap:
                return OTHER
            self._labels.add(name)
            return name
        self.refresh_soon()
        return UNKNOWN

    async def refresh(self) -> None:
        """Read the registry now (errors are logged, never raised: metrics must not break calls)."""
        if self.source is None:
            return
        self._refreshed_at = time.monotonic()
        try:
            self._registered = frozenset(await self.source())
        except Exception as exc:
            log.warning("metrics: could not list tools for labels (%s)", type(exc).__name__)

    def refresh_soon(self) -> None:
        """Start a background refresh unless one ran within `refresh_interval` or is running."""
        if self.source is None or (self._task is not None and not self._task.done()):
            return
        if time.monotonic() - self._refreshed_at < self.refresh_interval:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._refreshed_at = time.monotonic()  # rate-limited even when the refresh fails
        self._task = loop.create_task(self.refresh())

    async def start(self) -> None:
        self._refreshed_at = float("-inf")
        self.refresh_soon()  # in the background: a slow upstream must not delay start

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def ready(self) -> dict[str, Any]:
        return {"labels": len(self._labels), "registered": len(self._registered)}
