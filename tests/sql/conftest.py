from tests.api.conftest import api_env  # noqa: F401  (one seeded database + gateway per module)
