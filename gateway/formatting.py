"""Text that reaches people and JSON: money, one-line errors, validation messages. One definition each."""

from __future__ import annotations

from decimal import Decimal

from pydantic import ValidationError

MONEY_PLACES = 8  # docs/reports.md: money is a decimal string with 8 places, in JSON, CSV and the CLI
_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)


def money(value: Decimal | float | int | str | None) -> str:
    """USD as a decimal string with MONEY_PLACES places (`"0.01250000"`); None is zero."""
    if value is None:
        value = 0
    return format(Decimal(str(value) if isinstance(value, float) else value).quantize(_QUANTUM), "f")


def one_line(value: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line, bounded. An exception reads `Type: first line` (or just `Type`)."""
    text = str(value)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if isinstance(value, BaseException):
        first = f"{type(value).__name__}: {first}" if first else type(value).__name__
    return first[:limit]


def pg_message(exc: BaseException) -> str:
    """A database error on one line: PostgreSQL's primary message (psycopg's `diag.message_primary`, without
    the DETAIL, HINT and position lines), else the exception's first line, else its type."""
    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
    return one_line(primary or str(exc)) or type(exc).__name__


def validation_message(exc: ValidationError, default_location: str = "value") -> tuple[str, str]:
    """(where, what) of a pydantic error's first problem: `("days", "Input should be ...")`."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or default_location
    what = one_line(str(first.get("msg", "invalid value"))).removeprefix("Value error, ")
    return where, what
