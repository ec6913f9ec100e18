"""Tracking: every tool call becomes one row. The middleware and session registry,
session-end watching, the background writer, the records it writes, pricing.
"""
