"""PostgreSQL: the pools and per-transaction identity, tokens, reports, migrations,
the embedded cluster.
"""
