"""Errors that reach a person: one line, no traceback, exit code 2."""


class UserError(Exception):
    """Bad input or configuration. The message is the whole story."""

    exit_code = 2
