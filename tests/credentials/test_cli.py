"""`mcp-gateway credentials list|revoke` against a real database, as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from gateway.credentials.keys import Keyring
from gateway.credentials.store import CredentialStore, Secret
from gateway.store.db import Database
from tests.gateway_proc import REPO
from tests.pg import TestDatabase

KEY = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE="  # base64 of 32 x '1'


def _cli(database: TestDatabase, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    env.update(database.env(), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "gateway.cli", "credentials", *args], env=env, capture_output=True,
                          text=True, timeout=60, cwd=str(REPO), check=False)


async def test_list_and_revoke(database: TestDatabase, db: Database) -> None:
    store = CredentialStore(db, Keyring.parse(KEY, "test"))
    await store.put("acme", "alice", "gh", "per_user_token", Secret("secret-alice-token"))
    await store.put("globex", "bob", "gh", "per_user_token", Secret("secret-bob-token"))

    everyone = _cli(database, "list", "--json")
    assert everyone.returncode == 0, everyone.stderr
    rows = json.loads(everyone.stdout)
    assert {(r["tenant_id"], r["user_id"], r["upstream"], r["linked"]) for r in rows} == {
        ("acme", "alice", "gh", True), ("globex", "bob", "gh", True)}
    assert "secret-" not in everyone.stdout and "secret" not in rows[0]
    acme = json.loads(_cli(database, "list", "--tenant", "acme", "--json").stdout)
    assert [(r["tenant_id"], r["user_id"]) for r in acme] == [("acme", "alice")]
    assert "alice" in _cli(database, "list").stdout  # the table

    revoked = _cli(database, "revoke", "--tenant", "acme", "--user", "alice", "gh")
    assert revoked.returncode == 0 and "revoked acme/alice gh" in revoked.stdout
    assert (await store.get("acme", "alice", "gh")).state == "unlinked"
    assert (await store.get("globex", "bob", "gh")).state == "linked"  # nobody else touched

    again = _cli(database, "revoke", "--tenant", "acme", "--user", "alice", "gh")
    assert again.returncode == 2 and "no linked 'gh' account" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr
    # a revoke can never reach into another tenant through a crafted user id
    crafted = _cli(database, "revoke", "--tenant", "acme", "--user", "bob", "gh")
    assert crafted.returncode == 2
    assert (await store.get("globex", "bob", "gh")).state == "linked"
