"""`mcp-gateway serve` with named parts switched off, to attribute the gateway's overhead (bench only).

    BENCH_ABLATE=log,access,track,metrics,writer,mount python -m bench.ablate_serve serve --tools bench.tools:mcp

Each name removes one part from the request path:
  log      the per-call JSON log line            access   the access-policy middleware
  track    the tracking middleware (no records)  metrics  the Prometheus ASGI wrapper
  writer   records are built but not queued      mount    `echo` registered on the gateway itself, not mounted
Never used by the gateway itself; bench/overhead.py --ablate runs it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any


def apply(parts: set[str]) -> None:
    import gateway.http.metrics as metrics_module
    import gateway.mcp.access as access_module
    import gateway.tracking.middleware as tracking_module
    import gateway.tracking.writer as writer_module
    import gateway.wiring as wiring_module

    async def passthrough(self: Any, context: Any, call_next: Any) -> Any:
        return await call_next(context)

    if "log" in parts:
        logging.getLogger("mcp_gateway.calls").disabled = True
    if "access" in parts:
        # Its tools/call hook passes the call on; the middleware stays, so the fast path's direct chain (which
        # takes only the gateway's own middleware types) still serves the call, as it does with access on.
        access_module.AccessMiddleware.on_call_tool = passthrough  # type: ignore[method-assign]
    if "track" in parts:
        tracking_module.TrackingMiddleware.on_call_tool = passthrough  # type: ignore[method-assign]
    if "metrics" in parts:
        async def instrument(self: Any, scope: Any, receive: Any, send: Any, app: Any) -> None:
            await app(scope, receive, send)

        metrics_module.GatewayMetrics.instrument = instrument  # type: ignore[method-assign]
    if "writer" in parts:
        writer_module.TrackingWriter.submit = lambda self, record: None  # type: ignore[method-assign]
    if "mount" in parts:
        original = wiring_module.mount_servers

        def direct(mcp: Any, servers: Any) -> None:
            from bench.tools import mcp as bench_mcp

            rest = [s for s in servers if s is not bench_mcp]
            if len(rest) != len(servers):
                def echo(text: str) -> str:
                    """Return the text unchanged."""
                    return text

                mcp.tool(echo)
            original(mcp, rest)

        wiring_module.mount_servers = direct  # type: ignore[assignment]


def main() -> None:
    parts = {p.strip() for p in os.environ.get("BENCH_ABLATE", "").split(",") if p.strip()}
    unknown = parts - {"log", "access", "track", "metrics", "writer", "mount"}
    if unknown:
        sys.exit(f"BENCH_ABLATE: unknown part(s) {sorted(unknown)}")
    apply(parts)
    from gateway.cli.commands import main as cli_main

    cli_main(sys.argv[1:])


if __name__ == "__main__":
    main()
