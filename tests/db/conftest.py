"""Fixtures for the database tests: one seeded database per module (read-mostly tests
run each case in a rolled-back transaction on it)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.db import seed as S


@pytest.fixture(scope="module")
def seed_data() -> S.Seed:
    return S.build()


@pytest.fixture(scope="module")
def seeded(db_factory, seed_data):
    """A migrated database holding `seed_data` (written by the superuser)."""
    database = db_factory.create()
    with psycopg.connect(database.admin_url, autocommit=True) as admin:
        S.seed(admin, seed_data)
    yield database
    db_factory.drop(database)


@pytest.fixture(scope="module")
def runtime(seeded) -> Iterator[psycopg.Connection]:
    """One connection as the runtime login (mcp_gateway_app), like every pooled connection."""
    with psycopg.connect(seeded.urls.app, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def seeded_admin(seeded) -> Iterator[psycopg.Connection]:
    with psycopg.connect(seeded.admin_url, autocommit=True) as conn:
        yield conn
