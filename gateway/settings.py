"""Gateway settings from the environment (prefix MCP_GATEWAY_). Auth has its own model in auth/."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MCP_GATEWAY_", extra="ignore")

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
    config: Path | None = Field(None, description="TOML: upstream servers, pricing, tool access, quotas.")
    json_response: bool = Field(
        True, description="Answer /mcp POSTs with JSON rather than an SSE stream (faster; in-flight calls finish "
                          "during graceful shutdown). False: SSE responses (progress notifications mid-call).")
    instance_id: str | None = Field(
        None, description="Names this process in mcp_sessions.instance_id. Default HOSTNAME:PORT.")
    log_format: Literal["json", "text"] | None = Field(None, description="Log format (serve: json, dev: text).")
    flush_interval: float = Field(1.0, gt=0, le=60, description="Seconds between tracking writer flushes.")
    flush_rows: int = Field(2000, ge=1, description="A flush starts early when this many records wait.")
    queue_max: int = Field(200_000, ge=100, description="Records kept in memory while the database is away.")
    spill_dir: Path | None = Field(
        None, description="Where records beyond QUEUE_MAX are spilled while the database is away. Default DATA_DIR/spill.")
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
