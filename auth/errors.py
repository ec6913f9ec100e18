"""The two ways auth says no: bad configuration (at start) and a refused token (per request)."""

from __future__ import annotations


class AuthConfigError(Exception):
    """Auth cannot start with this configuration. The message is one line, fit for a CLI.

    Deliberately not a ValueError: raised inside a pydantic validator it must propagate
    as itself, not be folded into a multi-line ValidationError.
    """


class TokenRejected(Exception):
    """A presented token is not acceptable. `reason` is short, safe to log, never the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StoreUnavailable(Exception):
    """A token could only be judged by the token store (the database), which did not answer in time.

    Not a refusal: the token may be perfectly good. HTTP callers answer 503 with Retry-After, never
    401 (a 401 tells a client to drop its credentials). `reason` is short and safe to log.
    """

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
