"""Per-user credentials for upstream MCP servers: encrypted at rest, readable only by their owner."""
