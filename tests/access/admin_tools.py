"""Tools for the access tests, mounted with `--tools tests.access.admin_tools:mcp`."""

from fastmcp import FastMCP

mcp = FastMCP("access-tools")


@mcp.tool(tags={"admin"})
def purge(days: int) -> str:
    """Delete old data (an admin tool: tagged `admin`)."""
    return f"purged {days} days"


@mcp.tool
def danger_reset() -> str:
    """Made an admin tool by the config's admin_tools glob."""
    return "reset"


@mcp.tool
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@mcp.tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@mcp.tool
def github_issue(title: str) -> str:
    """Pretend to open an issue."""
    return f"opened {title}"


@mcp.prompt
def greet(name: str) -> str:
    """A prompt everyone may render."""
    return f"Hello {name}, welcome."


@mcp.prompt(tags={"admin"})
def audit_brief(topic: str) -> str:
    """An admin prompt (tagged `admin`)."""
    return f"Audit {topic}"


@mcp.resource("docs://readme")
def readme() -> str:
    """A resource everyone may read."""
    return "read me first"


@mcp.resource("vault://keys", tags={"admin"})
def keys() -> str:
    """An admin resource (tagged `admin`)."""
    return "the keys"


@mcp.resource("weather://{city}")
def weather(city: str) -> str:
    """A resource template."""
    return f"sunny in {city}"


@mcp.tool
async def nap(seconds: float) -> str:
    """Take a while (parallel-call tests need calls that overlap)."""
    import asyncio

    await asyncio.sleep(min(seconds, 5.0))
    return "rested"
