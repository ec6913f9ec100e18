"""Test helpers, one definition each: a free port, waiting for a condition, a signed JWT.

`tests.helpers.database` is a pytest plugin (listed in tests/conftest.py `pytest_plugins`) with the
PostgreSQL fixtures every test directory shares.
"""

from tests.helpers.jwt import JWT_SECRET, b64url, hs_token, make_jwt
from tests.helpers.net import free_port
from tests.helpers.wait import poll, wait_for

__all__ = ["JWT_SECRET", "b64url", "free_port", "hs_token", "make_jwt", "poll", "wait_for"]
