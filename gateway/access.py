"""Per-tool access by role (and tenant): who may see and call which tool.

Rules (`[access]` in MCP_GATEWAY_CONFIG), evaluated for a caller's (tenant, role):
1. Admin tools — tools tagged with one of `admin_tags` (default `admin`) or named by an
   `admin_tools` glob (default `run_sql`) — are never available to members.
2. Deny globs of the role, plus the tenant's deny globs for that role: a match denies.
   Deny always wins.
3. Allow globs: the tenant's list for that role if it has one, else the role's, else
   everything. A tool must match one of them.
Defaults (no `[access]` section): members may use every tool except admin tools;
admins and auditors may use everything.

`tools/list` shows each caller only what they may call. A call to a tool the caller may
not use answers exactly like a call to a tool that does not exist (FastMCP's
"Unknown tool" result, byte for byte) and is recorded as `denied` with the reason.
Resources and prompts are not filtered by these rules.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterable
from typing import Any

from fastmcp.exceptions import NotFoundError
from fastmcp.server.middleware import Middleware, MiddlewareContext
from fastmcp.server.providers.addressing import parse_hashed_backend_name

from auth import Principal
from gateway.config import AccessConfig, AccessRule
from gateway.errors import AccessDenied


def _match(name: str, globs: Iterable[str]) -> str | None:
    for glob in globs:
        if fnmatch.fnmatchcase(name, glob):
            return glob
    return None


class AccessPolicy:
    def __init__(self, config: AccessConfig) -> None:
        self.config = config
        self._admin_tags = set(config.admin_tags)

    def is_admin_tool(self, name: str, tags: Iterable[str] = ()) -> bool:
        return bool(self._admin_tags.intersection(tags)) or _match(name, self.config.admin_tools) is not None

    def _rules(self, tenant_id: str, role: str) -> tuple[AccessRule | None, AccessRule | None]:
        tenant = self.config.tenants.get(tenant_id)
        return self.config.roles.get(role), (tenant.roles.get(role) if tenant else None)  # type: ignore[call-overload]

    def needs_tags(self, role: str) -> bool:
        """Only members are refused admin tools, so only their checks look up a tool's tags."""
        return role == "member"

    def decide(self, tenant_id: str, role: str, name: str, tags: Iterable[str] = ()) -> str | None:
        """None if allowed, else the reason (for the record, never shown to the caller)."""
        if role == "member" and self.is_admin_tool(name, tags):
            return f"tool {name!r} is an admin tool (role member)"
        role_rule, tenant_rule = self._rules(tenant_id, role)
        for rule, where in ((role_rule, f"access.roles.{role}"),
                            (tenant_rule, f"access.tenants.{tenant_id}.roles.{role}")):
            if rule is not None:
                glob = _match(name, rule.deny)
                if glob is not None:
                    return f"tool {name!r} denied by {where}.deny {glob!r}"
        if tenant_rule is not None and tenant_rule.allow is not None:
            allow, where = tenant_rule.allow, f"access.tenants.{tenant_id}.roles.{role}"
        elif role_rule is not None and role_rule.allow is not None:
            allow, where = role_rule.allow, f"access.roles.{role}"
        else:
            return None
        if _match(name, allow) is None:
            return f"tool {name!r} not in {where}.allow"
        return None


def unknown_tool(name: str) -> NotFoundError:
    """What FastMCP raises for a tool that does not exist; its handler answers "Unknown tool: 'x'"."""
    return NotFoundError(f"Unknown tool: {name!r}")


class AccessMiddleware(Middleware):
    """Filters tools/list and refuses tools/call per AccessPolicy. Runs inside TrackingMiddleware."""

    TAGS_TTL = 10.0   # seconds a tool's tags are reused; config globs are judged on every call
    TAGS_MAX = 4096

    def __init__(self, policy: AccessPolicy, principal_of: Callable[[], Principal | None]) -> None:
        self.policy = policy
        self.principal_of = principal_of
        self._tags: dict[str, tuple[Any, float]] = {}  # tool name -> (tool or None, when looked up)

    async def _tool(self, context: MiddlewareContext[Any], name: str) -> Any:
        """The tool a member calls, for its tags: a lookup per name every few seconds, not per call."""
        now = time.monotonic()
        cached = self._tags.get(name)
        if cached is not None and now - cached[1] < self.TAGS_TTL:
            return cached[0]
        tool = await _find_tool(context, name)
        if len(self._tags) >= self.TAGS_MAX:
            self._tags.clear()
        self._tags[name] = (tool, now)
        return tool

    @staticmethod
    def _who(principal: Principal | None) -> tuple[str, str]:
        # No authenticated caller (in-memory transport): the least privileged view.
        return (principal.tenant_id, principal.role) if principal is not None else ("", "member")

    async def on_list_tools(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        tools = await call_next(context)
        tenant_id, role = self._who(self.principal_of())
        return [t for t in tools if self.policy.decide(tenant_id, role, t.name, t.tags) is None]

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        principal = self.principal_of()
        tenant_id, role = self._who(principal)
        name = context.message.name
        reason = self.policy.decide(tenant_id, role, name)
        if reason is None:
            tool = await self._tool(context, name) if self.policy.needs_tags(role) else None
            if tool is not None and tool.tags:
                reason = self.policy.decide(tenant_id, role, name, tool.tags)
            elif tool is None and parse_hashed_backend_name(name) is not None:
                # `<hash>_<tool>` addresses an app tool by identity: judge the tool it resolves to.
                target = await _find_hashed_tool(context, name)
                if target is not None:
                    reason = self.policy.decide(tenant_id, role, target.name, target.tags)
        if reason is None:
            return await call_next(context)
        if principal is None:  # not tracked: nothing records the denial, but the answer is the same
            raise unknown_tool(name)
        raise AccessDenied(reason, public=unknown_tool(name))


async def _find_tool(context: MiddlewareContext[Any], name: str) -> Any:
    server = context.fastmcp_context.fastmcp if context.fastmcp_context is not None else None
    if server is None:
        return None
    try:
        return await server.get_tool(name)
    except Exception:  # lookup trouble (e.g. an upstream down) is not a reason to refuse or to fail
        return None


async def _find_hashed_tool(context: MiddlewareContext[Any], name: str) -> Any:
    server = context.fastmcp_context.fastmcp if context.fastmcp_context is not None else None
    hashed = parse_hashed_backend_name(name)
    if server is None or hashed is None:
        return None
    try:
        return await server.get_tool_by_hash(*hashed)
    except Exception:
        return None

