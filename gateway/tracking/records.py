"""What tracking puts on the writer's queue. Plain data, cheap to build on the hot path."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

CallStatus = Literal["success", "error", "denied"]


@dataclass(slots=True)
class SessionOpened:
    """The first tracked call under a key: the analytics session starts here (lazily).

    `session_key` is the hex SHA-256 of the key's parts (gateway.tracking.middleware.session_key), never the
    identifiers themselves."""

    session_id: UUID
    session_key: str
    tenant_id: str
    user_id: str
    user_email: str | None
    user_name: str | None
    user_role: str | None  # None: not known (a session row rebuilt from a call); the user row keeps its role
    client_type: str | None
    client_version: str | None
    protocol_version: str | None
    transport: str | None
    mcp_session_id: str | None
    at: datetime


@dataclass(slots=True)
class ToolCalled:
    """One tools/call, whatever its outcome. Token counting happens in the writer."""

    id: UUID
    session_id: UUID
    session_key: str
    tenant_id: str
    user_id: str
    tool_name: str | None
    status: CallStatus
    error_message: str | None
    duration_ms: float
    at: datetime
    client_type: str | None
    arguments: Any = None          # what the model generated (completion tokens)
    result_text: str | None = None  # what the result adds to the model's context (prompt tokens)
    method: str = "tools/call"
    prompt_tokens: int | None = None      # set by the writer (or the caller, when known)
    completion_tokens: int | None = None
    extra_cost: float = 0.0               # e.g. a price reported by an upstream
    credential_mode: str | None = None    # upstream tools: whose credential served it (never the credential)
    cost: Decimal | None = None           # set by the writer with the token counts, a slice at a time


@dataclass(slots=True)
class SessionEnded:
    session_id: UUID
    session_key: str
    reason: str
    at: datetime


Record = SessionOpened | ToolCalled | SessionEnded


@dataclass
class WriterStats:
    written: int = 0
    dropped: int = 0
    spilled: int = 0
    flushes: int = 0
    last_flush_size: int = 0
    last_error: str | None = None
    database_up: bool = True
    repaired: int = 0      # refused as they were, stored with their text cleaned
    quarantined: int = 0   # refused even cleaned: set aside, counted, logged
    rolled_back: int = 0   # transactions PostgreSQL aborted (a deadlock) and the writer ran again
    flush_sizes: list[int] = field(default_factory=list)
