"""MCP_GATEWAY_CONFIG: the example loads; every bad file is refused with one line naming file, key and problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import GatewayConfig, load_config
from gateway.errors import UserError
from gateway.mcp.access import AccessPolicy
from gateway.mcp.quotas import Quotas
from tests.gateway_proc import REPO

EXAMPLE = REPO / "examples" / "gateway.toml"


def test_example_config_loads_with_its_secrets_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_MCP_TOKEN", "ghp-example")
    monkeypatch.setenv("FILES_AUDIT_KEY", "k")
    config = load_config(EXAMPLE)
    github, files = config.upstreams
    assert (github.name, github.kind, github.bearer_token_env) == ("github", "http", "GITHUB_MCP_TOKEN")
    assert (files.name, files.kind, files.command) == ("files", "stdio", "npx")
    assert config.pricing.version == "2026-11"
    policy = AccessPolicy(config.access)
    assert policy.decide("acme", "member", "run_sql") is not None
    assert policy.decide("acme", "member", "files_write_file") is not None
    assert policy.decide("acme", "member", "files_read_file") is None
    assert policy.decide("acme", "member", "github_delete_repo") is not None
    assert policy.decide("acme", "admin", "github_delete_repo") is None
    assert policy.decide("contractors", "member", "github_search_code") is None
    assert policy.decide("contractors", "member", "files_read_file") is not None
    quotas = Quotas(config.quotas, config.pricing)
    member = quotas.limits_for("acme", "member")
    assert (member.calls_per_minute, member.burst, str(member.user_daily_budget),
            str(member.tenant_daily_budget)) == (60, 20, "5.0", "200.0")
    big = quotas.limits_for("bigcorp", "member")
    assert (big.calls_per_minute, str(big.user_daily_budget), str(big.tenant_daily_budget)) == (60, "20.0", "2000.0")
    assert quotas.limits_for("acme", "auditor").user_daily_budget is None


def test_no_file_means_defaults() -> None:
    assert load_config(None) == GatewayConfig()


BAD = [
    ("colour = 'blue'\n", "colour: unknown key"),
    ("[[upstreams]]\nname = 'a'\ncomand = 'x'\n", "upstreams[0].comand: unknown key"),
    ("[[upstreams]]\nname = 'a'\n", "upstreams[0]: missing url or command"),
    ("[[upstreams]]\nurl = 'http://h/mcp'\n", "upstreams[0].name: missing required key"),
    ("[[upstreams]]\nname = 'a'\nurl = 'ftp://h/mcp'\n",
     "upstreams[0].url: 'ftp://h/mcp' is not an http:// or https:// URL with a host"),
    ("[[upstreams]]\nname = 'a'\nurl = 'http:///mcp'\n", "upstreams[0].url: 'http:///mcp' is not an http://"),
    ("[[upstreams]]\nname = 'a'\nurl = 'http://u:p@h/mcp'\n", "upstreams[0].url: credentials in the URL"),
    ("[[upstreams]]\nname = 'a'\nurl = 'http://h/mcp'\n[[upstreams]]\nname = 'b'\ncommand = 'x'\n"
     "[[upstreams]]\nname = 'a'\ncommand = 'y'\n",
     "upstreams: duplicate upstream name 'a' (upstreams[0] and upstreams[2])"),
    ("[[upstreams]]\nname = 'a'\nurl = 'http://h/mcp'\ncommand = 'x'\n", "upstreams[0]: give either url"),
    ("[[upstreams]]\nname = 'a'\nurl = 'http://h/mcp'\nargs = ['x']\n", "upstreams[0]: args applies to stdio"),
    ("[[upstreams]]\nname = 'a'\ncommand = 'x'\nbearer_token_env = 'T'\n",
     "upstreams[0]: bearer_token_env applies to url upstreams"),
    ("[[upstreams]]\nname = 'a'\ncommand = ' '\n", "upstreams[0].command: must not be empty"),
    ("[[upstreams]]\nname = 'my_svc'\ncommand = 'x'\n", "upstreams[0].name: 'my_svc' is not a valid upstream name"),
    ("[[upstreams]]\nname = 'a'\nurl = 'http://h/mcp'\nheaders = { Authorization = 'Bearer s3cret' }\n",
     "upstreams[0].headers: header 'Authorization' carries a secret and must not be in the file"),
    ("[[upstreams]]\nname = 'a'\nurl = 'http://h/mcp'\nbearer_token_env = 'MCPGW_TEST_UNSET_TOKEN'\n",
     "upstreams[0].bearer_token_env: environment variable MCPGW_TEST_UNSET_TOKEN is not set"),
    ("[[upstreams]]\nname = 'a'\ncommand = 'x'\nenv_from = { K = 'MCPGW_TEST_UNSET_VAR' }\n",
     "upstreams[0].env_from.K: environment variable MCPGW_TEST_UNSET_VAR is not set"),
    ("[[upstreams]]\nname = 'a'\nurl = 'http://h/mcp'\ntimeout = 0\n",
     "upstreams[0].timeout: Input should be greater than 0"),
    ("[[upstreams]]\nname = 'a'\nurl = 'http://h/mcp'\nlist_wait = 0\n",
     "upstreams[0].list_wait: Input should be greater than 0"),
    ("[[upstreams]]\nname = 'a'\nurl = 'http://h/mcp'\nlist_wait = 'soon'\n",
     "upstreams[0].list_wait: Input should be a valid number"),
    ("[[upstreams]]\nname = 'a'\nurl = 'http://h/mcp'\ntransport = 'websocket'\n",
     "upstreams[0].transport: Input should be 'http' or 'sse'"),
    ("[access.roles.boss]\ndeny = ['x']\n", "access.roles.boss: unknown key (expected 'member', 'admin' or 'auditor')"),
    ("[access.roles.member]\ndeny = 'x'\n", "access.roles.member.deny: Input should be a valid list"),
    ("[access.roles.member]\nalow = ['x']\n", "access.roles.member.alow: unknown key"),
    ("[access.tenants.acme.member]\ndeny = ['x']\n", "access.tenants.acme.member: unknown key"),
    ("[quotas.roles.member]\ndaily_budget = -1\n",
     "quotas.roles.member.daily_budget: Input should be greater than or equal to 0"),
    ("[quotas.roles.member]\ncalls_per_minit = 5\n", "quotas.roles.member.calls_per_minit: unknown key"),
    ("[quotas.tenants.acme]\ncalls_per_minute = 5\n", "quotas.tenants.acme.calls_per_minute: unknown key"),
    ("[quotas]\nrefresh_seconds = 'soon'\n", "quotas.refresh_seconds: Input should be a valid number"),
    ("[pricing]\ncall_price = -1\n", "pricing.call_price: Input should be greater than or equal to 0"),
    ("[[upstreams]\nname = 'a'\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[e for _, e in BAD])
def test_bad_config_names_file_key_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope\.toml: config file not found"):
        load_config(tmp_path / "nope.toml")


def test_serve_with_a_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[upstreams]]\nname = 'weather'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    env.update(MCP_GATEWAY_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(bad)], env=env,
                          cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert lines == [f"mcp-gateway: error: {bad}: upstreams[0]: missing url or command: an upstream needs an"
                     " http(s) url or a stdio command"], done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "data").exists(), "nothing written"
