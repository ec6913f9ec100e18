"""The ASGI app: routing, /api, /dashboard, /metrics, /health and /ready."""
