"""What MCP clients see: the gateway's own tools, access rules, quotas, upstream servers,
the SQL console tool.
"""
