"""MCP_GATEWAY_CONFIG: the TOML file for structured settings (pricing, upstreams, access, quotas).

Unknown keys are errors: a typo must not silently turn a limit off.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import UserError
from gateway.pricing import Pricing


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pricing: Pricing = Field(default_factory=Pricing)


def load_config(path: Path | None) -> GatewayConfig:
    if path is None:
        return GatewayConfig()
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read config file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise UserError(f"{path}: {where}: {message}") from None
