"""The MCP URL-mode elicitation for a missing or refused link (clients that declare `elicitation.url`).

Best effort, on top of the tool error (which every client gets): the client is asked to show the user
the link URL. Only for handshake-era sessions whose client declared URL elicitation; bounded in time so
a client that cannot answer (e.g. no back-channel) does not hold the call.
"""

from __future__ import annotations

import logging
import uuid

import anyio

from gateway.credentials.errors import CredentialError

log = logging.getLogger("mcp_gateway.credentials")


def _url_capable(session: object) -> bool:
    params = getattr(session, "client_params", None)
    elicitation = getattr(getattr(params, "capabilities", None), "elicitation", None)
    return elicitation is not None and getattr(elicitation, "url", None) is not None


async def offer_link(error: CredentialError, timeout: float) -> str | None:
    """Ask the client to open the link URL; the client's answer (accept/decline/cancel) or None."""
    from fastmcp.server.dependencies import get_context

    try:
        ctx = get_context()
        session = ctx.session
    except (RuntimeError, LookupError, AttributeError):
        return None
    if not _url_capable(session):
        return None
    try:
        with anyio.move_on_after(timeout):
            result = await session.elicit_url(  # type: ignore[attr-defined]
                message=str(error), url=error.link_url, elicitation_id=uuid.uuid4().hex,
                related_request_id=ctx.request_id)
            return str(result.action)
    except Exception as exc:
        log.debug("URL elicitation not delivered: %s", type(exc).__name__)
    return None
