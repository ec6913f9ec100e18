"""A client pre-registered in the config file: a confidential client authenticating with its secret
(client_secret_basic), refused with a wrong one; a bad entry stops the start with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gateway_proc import REPO, create_pat, running_gateway
from tests.oauth.flow import REDIRECT, Flow
from tests.pg import TestDatabase

CONFIG = """
[[oauth_clients]]
client_id = "team-portal"
client_name = "Team portal"
client_uri = "https://portal.example"
redirect_uris = ["{redirect}"]
client_secret_env = "PORTAL_SECRET"
"""


def test_preregistered_confidential_client(database: TestDatabase, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(redirect=REDIRECT))
    pat = create_pat(database, "acme", "alice")
    with running_gateway(database, tmp_path / "gw", args=("serve", "--config", str(config)),
                         PORTAL_SECRET="portal-secret-value") as gw:
        flow = Flow(gw.base_url, gw.log)
        try:
            authorized = flow.full_authorization("team-portal", pat)
            data = {"grant_type": "authorization_code", "code": authorized.code, "redirect_uri": REDIRECT,
                    "code_verifier": authorized.verifier, "resource": flow.mcp_url}
            wrong = flow.token(data, auth=("team-portal", "not-the-secret"))
            assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
            public = flow.token({**data, "client_id": "team-portal"})  # no secret at all
            assert public.status_code in (400, 401) and public.json()["error"] == "invalid_client"
            good = flow.token(data, auth=("team-portal", "portal-secret-value"))
            assert good.status_code == 200, good.text
        finally:
            flow.close()


@pytest.mark.parametrize("entry,message", [
    ('client_id = "dcr_x"\nredirect_uris = ["http://127.0.0.1/cb"]', "dcr_"),
    ('client_id = "x"\nredirect_uris = ["http://evil.example/cb"]', "loopback"),
    ('client_id = "x"\nredirect_uris = ["http://127.0.0.1/cb"]\nclient_secret_env = "NOT_SET_ANYWHERE"',
     "NOT_SET_ANYWHERE"),
])
def test_bad_entries_refuse_to_start(database: TestDatabase, tmp_path: Path, entry: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[[oauth_clients]]\n" + entry + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    env.update(database.env(), PYTHONPATH=str(REPO), MCP_GATEWAY_CONFIG=str(config))
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--port", "0"], env=env,
                            capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
