# mcp-gateway: a slim image running `mcp-gateway serve` as a non-root user.
#   docker build -t mcp-gateway .
#   docker compose up          (see docker-compose.yml: PostgreSQL 16 + migrate + gateway)
# The install step is the one CI runs (pip install of the project); migrations/ and policies/
# ship inside the package (gateway/sql/, see setup.py), so the image needs no source tree.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in ./
COPY gateway ./gateway
COPY auth ./auth
COPY fastmcp_private ./fastmcp_private
COPY migrations ./migrations
COPY policies ./policies
RUN pip install . && cd / && rm -rf /src

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/mcp-gateway --create-home mcp-gateway
USER 10001:10001
WORKDIR /var/lib/mcp-gateway

# MCP_GATEWAY_WORKERS=N (or `serve --workers N`): N worker processes on the one port (docs/scaling.md).
ENV MCP_GATEWAY_HOST=0.0.0.0 \
    MCP_GATEWAY_PORT=8051 \
    MCP_GATEWAY_WORKERS=1 \
    MCP_GATEWAY_DATA_DIR=/var/lib/mcp-gateway
EXPOSE 8051

HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('MCP_GATEWAY_PORT', '8051'), timeout=2)" || exit 1

CMD ["mcp-gateway", "serve"]
