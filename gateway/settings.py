"""Gateway settings from the environment (prefix MCP_GATEWAY_). Auth has its own model in auth/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.http import origins

CsvList = Annotated[list[str], NoDecode]  # "a,b" in the environment


class Settings(BaseSettings):
    # Frozen: built once from the environment, then passed around; a CLI override is a model_copy.
    model_config = SettingsConfigDict(env_prefix="MCP_GATEWAY_", extra="ignore", frozen=True)

    database_url: SecretStr | None = Field(
        None, description="postgresql:// URL of an existing server (migrations, CLI). Unset: embedded PostgreSQL.")
    app_database_url: SecretStr | None = Field(
        None, description="URL for the runtime login mcp_gateway_app. Unset: DATABASE_URL with that user.")
    console_database_url: SecretStr | None = Field(
        None, description="URL for the admin SQL login mcp_gateway_console. Unset: DATABASE_URL with that user.")
    data_dir: Path = Field(Path("~/.local/share/mcp-gateway"),
                           description="Where the embedded cluster (and its socket) lives.")
    host: str = Field("127.0.0.1", description="Listen address.")
    port: int = Field(8051, ge=0, le=65535, description="Listen port.")
    public_url: str | None = Field(None, description="External base URL (RFC 9728). Default http://HOST:PORT.")
    session_idle_timeout: float = Field(1800, gt=0, description="Seconds before an idle session ends (timeout).")
    max_sessions_per_principal: int = Field(
        100, ge=1, description="Open protocol sessions (handshake-era /mcp sessions plus /sse connections) one "
                               "principal may hold per process; one more gets HTTP 429 on initialize.")
    session_reap_after: float = Field(
        60, ge=0, description="At its session cap, a principal's session idle this many seconds (no request in "
                              "flight) is ended to admit a new one, the longest-idle first.")
    config: Path | None = Field(None, description="TOML: upstream servers, pricing, tool access, quotas.")
    json_response: bool = Field(
        True, description="Answer /mcp POSTs with JSON rather than an SSE stream (faster; in-flight calls finish "
                          "during graceful shutdown). False: SSE responses (progress notifications mid-call).")
    fast_path: bool = Field(
        True, description="Answer `tools/call` and `tools/list` in JSON-response mode straight from the gateway, "
                          "without the SDK's per-request transport machinery (same middleware, same replies and rows; "
                          "anything else takes the SDK's path). False: every request takes the SDK's path.")
    upstream_direct_calls: bool = Field(
        True, description="Post tool calls to streamable-HTTP upstreams directly on the upstream's open session "
                          "(same requests, replies, errors and rows as the MCP client's, for a fraction of its CPU; "
                          "anything else goes through the client). False: every upstream request uses the client.")
    instance_id: str | None = Field(
        None, description="Names this process in mcp_sessions.instance_id; held while the process lives (a second "
                          "process with a live id refuses to start). Default HOSTNAME:PORT.")
    workers: int = Field(1, ge=1, le=64, description="Worker processes `serve` runs on the one listening socket "
                         "(`serve --workers`); each has its own instance id (INSTANCE_ID-w<i>) and pool.")
    replicas: int = Field(1, ge=1, le=1000, description="Gateway replicas (hosts or containers) the operator runs "
                          "against this database; used for the connection budget (docs/scaling.md, `doctor`).")
    db_pool_size: int = Field(10, ge=2, le=1000, description="Most pooled database connections one process opens.")
    db_connection_budget: int | None = Field(
        None, ge=1, description="Connections all gateway processes together may use; each process's pool is cut "
                                "to budget // (WORKERS × REPLICAS) − 1 − SQL_SLOTS. Unset: DB_POOL_SIZE each.")
    db_headroom: int = Field(10, ge=0, description="Connections kept free for migrations, psql, backups and "
                             "monitoring when `doctor` checks the budget against max_connections.")
    log_format: Literal["json", "text"] | None = Field(None, description="Log format (serve: json, dev: text).")
    flush_interval: float = Field(1.0, gt=0, le=60, description="Seconds between tracking writer flushes.")
    flush_rows: int = Field(2000, ge=1, description="A flush starts early when this many records wait.")
    queue_max: int = Field(200_000, ge=100, description="Records kept in memory while the database is away.")
    writer_stall_seconds: float = Field(
        60, gt=0, description="/ready answers 503 when tracking records wait and none has been written for this "
                              "many seconds (database away, or refusing every write).")
    spill_dir: Path | None = Field(
        None,
        description="Where records beyond QUEUE_MAX are spilled while the database is away. Default DATA_DIR/spill.")
    # The admin SQL console (POST /api/sql, run_sql, `mcp-gateway sql`; docs/admin-sql.md).
    sql_row_cap: int = Field(10_000, ge=1, le=1_000_000, description="SQL console: most rows in one answer.")
    sql_deadline: float = Field(10.0, ge=0.1, le=300, description="SQL console: seconds a query may run, "
                                "counted from when it got a connection (time queued is not charged).")
    sql_byte_budget: int = Field(32 * 1024 * 1024, ge=64 * 1024, le=1024 ** 3,
                                 description="SQL console: bytes one answer may hold (rows as objects plus "
                                             "their JSON); more rows are cut off with truncated=true.")
    sql_value_cap: int = Field(1024 * 1024, ge=1024, le=256 * 1024 * 1024,
                               description="SQL console: a value larger than this many bytes is cut (on the "
                                           "database server) to its first characters as text.")
    sql_slots: int = Field(4, ge=1, le=64, description="SQL console: queries running at once (connections).")
    sql_slots_per_tenant: int = Field(2, ge=1, le=64, description="SQL console: queries one tenant (or all "
                                      "auditors together) may run at once; the rest wait their turn.")
    sql_queue_per_tenant: int = Field(8, ge=0, le=1000, description="SQL console: queries one tenant may have "
                                      "waiting; more are answered 429.")
    sql_queue_timeout: float = Field(30.0, gt=0, le=600, description="SQL console: seconds a query may wait "
                                     "for a connection before it is answered 429.")

    allowed_origins: CsvList | None = Field(
        None, description="Origins (scheme://host[:port]) a browser may send to /mcp, /sse, /messages/ and /api, "
                          "besides the public URL's own (every loopback spelling of it for a loopback URL); another "
                          "Origin gets 403, no Origin passes. `*` alone: any origin; `null` never.")
    allowed_hosts: CsvList | None = Field(
        None, description="Host header values the gateway answers (host names or IPs, `*.example.com` wildcards); "
                          "any other Host gets 400. Unset: every Host.")
    metrics_token: SecretStr | None = Field(
        None, description="Bearer token GET /metrics requires (`Authorization: Bearer <token>`, compared exactly). "
                          "Unset: /metrics is open.")

    @field_validator("allowed_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value or None  # empty: the default

    @field_validator("allowed_origins", mode="after")
    @classmethod
    def _origins(cls, value: list[str] | None) -> list[str] | None:
        return origins.check_origins(value) if value else None

    @field_validator("allowed_hosts", mode="after")
    @classmethod
    def _hosts(cls, value: list[str] | None) -> list[str] | None:
        return origins.check_hosts(value) if value else None

    @field_validator("metrics_token", mode="after")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None  # empty: unset
    credentials_key: SecretStr | None = Field(
        None, description="Key(s) that encrypt per-user upstream credentials: base64 of 32 random bytes"
                          " (`openssl rand -base64 32`); a comma list during rotation, the first encrypts, the"
                          " others still decrypt. Required when an upstream uses a per-user credentials mode.")
    credentials_key_file: Path | None = Field(
        None, description="File with the credentials key(s), one per line (first = current); instead of"
                          " CREDENTIALS_KEY.")

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")
