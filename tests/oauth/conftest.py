from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.gateway_proc import GatewayProcess, create_pat, running_gateway
from tests.oauth.cimd_server import CimdServer, start_cimd_server
from tests.oauth.flow import Flow
from tests.pg import TestDatabase


@pytest.fixture(scope="module")
def oauth_db(db_factory) -> Iterator[TestDatabase]:
    database = db_factory.create()
    yield database
    db_factory.drop(database)


@pytest.fixture(scope="module")
def cimd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CimdServer]:
    state, server, thread = start_cimd_server(tmp_path_factory.mktemp("cimd"))
    yield state
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def gateway(oauth_db: TestDatabase, cimd: CimdServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(oauth_db, tmp_path_factory.mktemp("gw"), args=("serve", "--tools", "tests.sample_tools:mcp"),
                         MCP_GATEWAY_OAUTH_ACCESS_TOKEN_TTL="60", MCP_GATEWAY_OAUTH_REFRESH_GRACE="2",
                         MCP_GATEWAY_OAUTH_CIMD_ALLOWED_HOSTS="localhost", MCP_GATEWAY_OAUTH_DCR_PER_HOUR="1000",
                         MCP_GATEWAY_OAUTH_CIMD_CA_FILE=str(cimd.ca_file)) as gw:
        yield gw


@pytest.fixture(scope="module")
def alice_pat(oauth_db: TestDatabase) -> str:
    return create_pat(oauth_db, "acme", "alice", "member")


@pytest.fixture(scope="module")
def bob_pat(oauth_db: TestDatabase) -> str:
    return create_pat(oauth_db, "globex", "bob", "admin")


@pytest.fixture
def flow(gateway: GatewayProcess) -> Iterator[Flow]:
    f = Flow(gateway.base_url, gateway.log)
    yield f
    f.close()


@pytest.fixture
def admin(oauth_db: TestDatabase) -> Iterator[psycopg.Connection]:
    with psycopg.connect(oauth_db.admin_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def client_id(flow: Flow) -> str:
    return flow.register()["client_id"]

