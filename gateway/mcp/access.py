"""Access by role (and tenant): who may see and use which tool, prompt and resource.

Rules (`[access]` in MCP_GATEWAY_CONFIG), evaluated for a caller's (tenant, role):
1. Admin tools — tools tagged with one of `admin_tags` (default `admin`) or named by an
   `admin_tools` glob (default `run_sql`) — are never available to members.
2. Deny globs of the role, plus the tenant's deny globs for that role: a match denies.
   Deny always wins.
3. Allow globs: the tenant's list for that role if it has one, else the role's, else
   everything. A tool must match one of them.
Defaults (no `[access]` section): members may use every tool except admin tools;
admins and auditors may use everything.

The same rules govern prompts and resources, in one namespace: a glob is matched against
a tool's name, a prompt's name, a resource's URI (a resource template's `uri_template`
in listings, the concrete URI when read; a completion against its prompt name or template
URI). Tags make a prompt or resource an admin component exactly as they do a tool.

Each `*/list` shows a caller only what they may use. Using anything else answers exactly
like using something that does not exist (FastMCP's "Unknown tool" result, "Unknown
prompt" / "Unknown resource" errors, byte for byte) and is recorded as `denied` with the
reason.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastmcp.exceptions import NotFoundError
from fastmcp.server.middleware import Middleware, MiddlewareContext
from fastmcp.server.providers.addressing import parse_hashed_backend_name

from auth import Principal
from gateway.config import AccessConfig, AccessRule
from gateway.errors import AccessDenied
from gateway.tracking.middleware import COMPLETE, completion_target


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

    def decide(self, tenant_id: str, role: str, name: str, tags: Iterable[str] = (), kind: str = "tool") -> str | None:
        """None if allowed, else the reason (for the record, never shown to the caller)."""
        if role == "member" and self.is_admin_tool(name, tags):
            return f"{kind} {name!r} is an admin {kind} (role member)"
        role_rule, tenant_rule = self._rules(tenant_id, role)
        for rule, where in ((role_rule, f"access.roles.{role}"),
                            (tenant_rule, f"access.tenants.{tenant_id}.roles.{role}")):
            if rule is not None:
                glob = _match(name, rule.deny)
                if glob is not None:
                    return f"{kind} {name!r} denied by {where}.deny {glob!r}"
        if tenant_rule is not None and tenant_rule.allow is not None:
            allow, where = tenant_rule.allow, f"access.tenants.{tenant_id}.roles.{role}"
        elif role_rule is not None and role_rule.allow is not None:
            allow, where = role_rule.allow, f"access.roles.{role}"
        else:
            return None
        if _match(name, allow) is None:
            return f"{kind} {name!r} not in {where}.allow"
        return None


def unknown_tool(name: str) -> NotFoundError:
    """What FastMCP raises for a tool that does not exist; its handler answers "Unknown tool: 'x'"."""
    return NotFoundError(f"Unknown tool: {name!r}")


HIDDEN_PROMPT = "mcp-gateway-hidden"          # a completion for a hidden ref asks about these instead
HIDDEN_URI = "mcp-gateway-hidden://unknown"


def unknown(kind: str, name: str) -> NotFoundError:
    """What FastMCP raises for a tool, prompt or resource that does not exist (same text, same error)."""
    return NotFoundError(f"Unknown {kind}: {name!r}")


class AccessMiddleware(Middleware):
    """Filters the lists and refuses tools/call, prompts/get, resources/read and completion/complete per
    AccessPolicy. Runs inside TrackingMiddleware."""

    TAGS_TTL = 10.0   # seconds a tool's tags are reused; config globs are judged on every call
    TAGS_MAX = 4096

    def __init__(self, policy: AccessPolicy, principal_of: Callable[[], Principal | None]) -> None:
        self.policy = policy
        self.principal_of = principal_of
        # tool name, or (kind, name) for prompts/resources -> (component or None, when looked up)
        self._tags: dict[Any, tuple[Any, float]] = {}

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

    # -- prompts and resources: the same rules, one namespace of names and URIs -------------------

    async def on_list_prompts(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        prompts = await call_next(context)
        tenant_id, role = self._who(self.principal_of())
        return [p for p in prompts if self.policy.decide(tenant_id, role, p.name, p.tags, "prompt") is None]

    async def on_list_resources(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        resources = await call_next(context)
        tenant_id, role = self._who(self.principal_of())
        return [r for r in resources if self.policy.decide(tenant_id, role, str(r.uri), r.tags, "resource") is None]

    async def on_list_resource_templates(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        templates = await call_next(context)
        tenant_id, role = self._who(self.principal_of())
        return [t for t in templates
                if self.policy.decide(tenant_id, role, t.uri_template, t.tags, "resource") is None]

    async def on_get_prompt(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        name = context.message.name
        await self._enforce(context, "prompt", name, lambda server: server.get_prompt(name))
        return await call_next(context)

    async def on_read_resource(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        uri = str(context.message.uri)
        await self._enforce(context, "resource", uri, lambda server: _resource_or_template(server, uri))
        return await call_next(context)

    async def on_request(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        if context.method != COMPLETE or not isinstance(context.message, dict):
            return await call_next(context)
        # Completing an argument of a hidden prompt or template would reveal it: judged like using it,
        # and answered as the same request for a reference that does not exist.
        name, _ = completion_target(context.message)
        ref = context.message.get("ref")
        if name is None or not isinstance(ref, dict):
            return await call_next(context)
        if ref.get("type") == "ref/prompt":
            reason = await self._refusal(context, "prompt", name, lambda server: server.get_prompt(name))
            placeholder = {**ref, "name": HIDDEN_PROMPT}
        else:
            reason = await self._refusal(context, "resource", name, lambda server: server.get_resource_template(name))
            placeholder = {**ref, "uri": HIDDEN_URI}
        if reason is None:
            return await call_next(context)
        unknown_ref = context.copy(message={**context.message, "ref": placeholder})
        try:
            answer = await call_next(unknown_ref)
        except Exception as exc:
            if self.principal_of() is None:
                raise
            raise AccessDenied(reason, public=exc) from None
        if self.principal_of() is None:
            return answer
        raise AccessDenied(reason, result=answer)

    async def _enforce(self, context: MiddlewareContext[Any], kind: str, name: str,
                       lookup: Callable[[Any], Awaitable[Any]]) -> None:
        reason = await self._refusal(context, kind, name, lookup)
        if reason is None:
            return
        if self.principal_of() is None:
            raise unknown(kind, name)
        raise AccessDenied(reason, public=unknown(kind, name))

    async def _refusal(self, context: MiddlewareContext[Any], kind: str, name: str,
                       lookup: Callable[[Any], Awaitable[Any]]) -> str | None:
        tenant_id, role = self._who(self.principal_of())
        reason = self.policy.decide(tenant_id, role, name, (), kind)
        if reason is None and self.policy.needs_tags(role):
            component = await self._component(context, kind, name, lookup)
            if component is not None and component.tags:
                reason = self.policy.decide(tenant_id, role, name, component.tags, kind)
        return reason

    async def _component(self, context: MiddlewareContext[Any], kind: str, name: str,
                         lookup: Callable[[Any], Awaitable[Any]]) -> Any:
        """A prompt's or resource's definition, for its tags (cached like tools' tags)."""
        key = (kind, name)
        now = time.monotonic()
        cached = self._tags.get(key)
        if cached is not None and now - cached[1] < self.TAGS_TTL:
            return cached[0]
        server = context.fastmcp_context.fastmcp if context.fastmcp_context is not None else None
        found = None
        if server is not None:
            try:
                found = await lookup(server)
            except Exception:  # lookup trouble is not a reason to refuse or to fail
                found = None
        if len(self._tags) >= self.TAGS_MAX:
            self._tags.clear()
        self._tags[key] = (found, now)
        return found


async def _resource_or_template(server: Any, uri: str) -> Any:
    """The concrete resource at `uri`, else the template that serves it (tags live on either)."""
    return await server.get_resource(uri) or await server.get_resource_template(uri)


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

