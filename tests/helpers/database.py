"""pytest plugin: a real PostgreSQL server per run, a fresh migrated database per test.

Fixtures:
- `pg_server`   (session) tests.pg.Server: where the server is.
- `db_factory`  (session) tests.pg.DatabaseFactory: `.create()` / `.drop()` more databases.
- `database`    (function) tests.pg.TestDatabase: a migrated, empty database; `.urls`,
                `.admin_url`, `.env()` for subprocesses.
- `db`          (function, async) gateway.store.db.Database opened on `database` (runtime login).
- `admin_conn`  (function) psycopg.Connection as the admin/superuser, autocommit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from gateway.store.db import Database
from tests.pg import DatabaseFactory, Server, TestDatabase, start_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    with start_server() as server:
        yield server


@pytest.fixture(scope="session")
def db_factory(pg_server: Server) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(pg_server)
    yield factory
    factory.close()


@pytest.fixture
def database(db_factory: DatabaseFactory) -> Iterator[TestDatabase]:
    database = db_factory.create()
    yield database
    db_factory.drop(database)


@pytest.fixture
async def db(database: TestDatabase) -> AsyncIterator[Database]:
    instance = Database(database.urls, min_size=1, max_size=4)
    await instance.open(wait=True)
    yield instance
    await instance.close()


@pytest.fixture
def admin_conn(database: TestDatabase) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        yield conn
