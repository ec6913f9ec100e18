"""Pre-registered OAuth clients from the config file (`[[oauth_clients]]`), for clients that can do
neither CIMD nor dynamic registration, or that an operator wants to name explicitly."""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.oauth.clients import redirect_uri_problem
from gateway.oauth.store import ClientRow, digest

_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")


class OAuthClientConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(description="The client's id: letters, digits, '.', '_', ':', '-' (not an https URL, "
                                       "which would be a client metadata document, nor starting with dcr_)")
    client_name: str | None = Field(None, description="Shown on the consent page")
    client_uri: str | None = Field(None, description="The client's home page, shown on the consent page")
    redirect_uris: list[str] = Field(description="Exact redirect URIs (loopback ones: any port)")
    client_secret_env: str | None = Field(
        None, description="Environment variable holding the client's secret (a confidential client); unset: "
                          "a public client (PKCE only)")
    token_endpoint_auth_method: Literal["none", "client_secret_basic", "client_secret_post"] | None = Field(
        None, description="Default: client_secret_basic with a secret, none without")

    @field_validator("client_id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _CLIENT_ID.fullmatch(value) or value.startswith("dcr_"):
            raise ValueError("must be letters, digits, '.', '_', ':', '-' (at most 200) and not start with dcr_")
        return value

    @field_validator("redirect_uris")
    @classmethod
    def _redirects(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one redirect URI is required")
        for uri in value:
            problem = redirect_uri_problem(uri)
            if problem:
                raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _secret(self) -> OAuthClientConfig:
        method = self.token_endpoint_auth_method
        if self.client_secret_env:
            if not os.environ.get(self.client_secret_env):
                raise ValueError(f"environment variable {self.client_secret_env} (client_secret_env) is not set")
            if method == "none":
                raise ValueError("a client with a secret cannot use token_endpoint_auth_method none")
        elif method not in (None, "none"):
            raise ValueError(f"{method} needs client_secret_env")
        return self

    def row(self) -> ClientRow:
        secret = os.environ.get(self.client_secret_env) if self.client_secret_env else None
        method = self.token_endpoint_auth_method or ("client_secret_basic" if secret else "none")
        return ClientRow(client_id=self.client_id, kind="config", client_name=self.client_name,
                         client_uri=self.client_uri, redirect_uris=tuple(self.redirect_uris),
                         token_endpoint_auth_method=method, secret_hash=digest(secret) if secret else None)
