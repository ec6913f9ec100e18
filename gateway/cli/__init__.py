"""The `mcp-gateway` command (commands.py) and its parts."""
