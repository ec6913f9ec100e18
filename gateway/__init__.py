"""mcp-gateway: a multi-user, authenticated MCP gateway with PostgreSQL row-level security."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "track_tool_execution"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import gateway` (CLI start-up, migrations) does not import FastMCP.
    if name == "track_tool_execution":
        from gateway.tracking.middleware import track_tool_execution

        return track_tool_execution
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
