"""One seeded database and one real gateway process per test module (the API only reads)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from tests.api.seed import A, B, seed
from tests.gateway_proc import GatewayProcess, make_jwt, running_gateway
from tests.pg import DatabaseFactory, TestDatabase

# name -> (user, tenant, role)
PRINCIPALS = {
    "member": ("alice", A, "member"),
    "admin": ("carol", A, "admin"),
    "auditor": ("audrey", A, "auditor"),
    "other_member": ("alice", B, "member"),
    "other_admin": ("zz-secret-zed", B, "admin"),
}


@dataclass
class ApiEnv:
    database: TestDatabase
    gateway: GatewayProcess
    http: httpx.Client

    def token(self, who: str) -> str:
        user, tenant, role = PRINCIPALS[who]
        return make_jwt(user, tenant, role)

    def get(self, who: str, path: str, **params: str | int) -> httpx.Response:
        return self.http.get(path, params=params, headers={"Authorization": f"Bearer {self.token(who)}"})

    def post(self, who: str, path: str, body: object) -> httpx.Response:
        return self.http.post(path, json=body, headers={"Authorization": f"Bearer {self.token(who)}"})

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.database.admin_url, autocommit=True)


@pytest.fixture(scope="module")
def api_env(db_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiEnv]:
    database = db_factory.create()
    try:
        with psycopg.connect(database.admin_url, autocommit=True) as conn:
            seed(conn)
        with running_gateway(database, tmp_path_factory.mktemp("gw"), MCP_GATEWAY_SQL_DEADLINE="2") as gateway, \
                httpx.Client(base_url=gateway.base_url, timeout=30) as http:
            yield ApiEnv(database, gateway, http)
    finally:
        db_factory.drop(database)
