"""Errors with a meaning of their own: what a person is told, what a tool call is refused with."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """Bad input or configuration: one line, no traceback, exit code 2. The message is the whole story."""

    exit_code = 2


class AccessDenied(Exception):
    """Raised by access/quota checks inside the middleware chain: the call is recorded as `denied`.

    `public` is what the caller sees (for hidden tools: exactly the unknown-tool answer).
    `result`, when set, is returned instead (e.g. an isError ToolResult with structured content).
    """

    def __init__(self, reason: str, public: Exception | None = None, result: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.public = public
        self.result = result
