"""Configuration: one-line AuthConfigError for what cannot work; env parsing; the import boundary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from auth import AuthConfigError, AuthSettings
from auth.provider import GatewayAuth

REPO = Path(__file__).resolve().parents[2]


def test_short_secret_refuses_to_start() -> None:
    with pytest.raises(AuthConfigError) as info:
        AuthSettings(jwt_secret="too-short-secret")
    message = str(info.value)
    assert "\n" not in message and "MCP_GATEWAY_JWT_SECRET" in message and "32" in message
    assert "too-short-secret" not in message


def test_short_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_GATEWAY_JWT_SECRET", "x" * 31)
    with pytest.raises(AuthConfigError):
        AuthSettings()
    monkeypatch.setenv("MCP_GATEWAY_JWT_SECRET", "x" * 32)
    assert AuthSettings().jwt_secret is not None


@pytest.mark.parametrize("overrides", [
    {"introspection_url": "https://idp.test/introspect"},
    {"oidc_issuer": "idp.test"},
    {"public_url": "ftp://x"},
    {"tenant_claim": ""},
])
def test_unworkable_settings(overrides: dict[str, str]) -> None:
    with pytest.raises(AuthConfigError) as info:
        AuthSettings(**overrides)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_malformed_value_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_GATEWAY_LEEWAY_SECONDS", "soon")
    with pytest.raises(AuthConfigError) as info:
        AuthSettings.load()
    assert "\n" not in str(info.value) and "LEEWAY_SECONDS" in str(info.value)


def test_environment_lists_and_empty_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_GATEWAY_JWT_AUDIENCE", "https://a.test, https://b.test")
    monkeypatch.setenv("MCP_GATEWAY_DEFAULT_TENANT", "")
    settings = AuthSettings()
    assert settings.jwt_audience == ["https://a.test", "https://b.test"]
    assert settings.default_tenant is None
    assert settings.tenant_claim == "tenant" and settings.roles_claim == "roles"
    assert settings.public_url == "http://127.0.0.1:8051" and settings.leeway_seconds == 30


def test_no_token_source_at_all() -> None:
    with pytest.raises(AuthConfigError):
        GatewayAuth(AuthSettings())


def test_secret_is_not_in_repr() -> None:
    settings = AuthSettings(jwt_secret="k" * 40, introspection_url="https://i.test",
                            introspection_client_id="c", introspection_client_secret="supersecret")
    assert "k" * 40 not in repr(settings) and "supersecret" not in repr(settings)


def test_auth_imports_nothing_from_gateway() -> None:
    code = (
        "import importlib, pkgutil, sys, auth\n"
        "for m in pkgutil.walk_packages(auth.__path__, 'auth.'):\n"
        "    importlib.import_module(m.name)\n"
        "auth.current_principal, auth.require_principal, auth.GatewayAuth\n"
        "bad = sorted(n for n in sys.modules if n == 'gateway' or n.startswith('gateway.'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
