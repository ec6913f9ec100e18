"""The CLI's shared helpers and the one-definition text helpers, without a database or a subprocess."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError
from rich.console import Console

from gateway.cli.common import cell, check_format, check_id, load_settings
from gateway.cli.reports import costs_table
from gateway.errors import UserError
from gateway.formatting import money, one_line, pg_message, validation_message
from gateway.store.reports import CostReport


def rendered(table: object) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def test_report_costs_prints_none_for_an_empty_key() -> None:
    report = CostReport(group_by="client", since=date(2026, 11, 1), until=date(2026, 11, 2),
                        columns=("client_type", "calls", "cost"),
                        rows=[{"client_type": "", "calls": 2, "cost": "0.01000000"},
                              {"client_type": "claude-code", "calls": 1, "cost": "0.00500000"}],
                        totals={"calls": 3, "cost": "0.01500000"})
    text = rendered(costs_table(report, "Costs by client"))
    assert "(none)" in text and "claude-code" in text and "0.01500000" in text


def test_cell() -> None:
    assert cell(None) == "" and cell(None, empty="(none)") == ""
    assert cell("") == "" and cell("", empty="(none)") == "(none)"
    assert cell({"a": [1]}) == '{"a": [1]}' and cell([1, "x"]) == '[1, "x"]'
    assert cell(Decimal("0.5")) == "0.5" and cell(0) == "0"


def test_option_checks_are_user_errors() -> None:
    with pytest.raises(UserError, match="--format 'xml': expected table, csv or json"):
        check_format("xml")
    with pytest.raises(UserError, match="--tenant"):
        check_id("a\x00b", "--tenant")
    check_id(None, "--tenant")


def test_a_bad_setting_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_GATEWAY_SQL_ROW_CAP", "0")
    with pytest.raises(UserError) as caught:
        load_settings()
    assert str(caught.value).startswith("MCP_GATEWAY_SQL_ROW_CAP: ") and "\n" not in str(caught.value)


def test_money_has_the_documented_eight_places() -> None:
    assert money(Decimal("0.0125")) == "0.01250000"
    assert money(0) == "0.00000000" and money(None) == "0.00000000"
    assert money(0.1) == "0.10000000"  # floats through their shortest repr, not binary noise
    assert money("12") == "12.00000000"


@given(st.decimals(min_value=0, max_value=10**9, allow_nan=False, places=12))
def test_money_round_trips_within_half_a_unit(value: Decimal) -> None:
    shown = Decimal(money(value))
    assert abs(shown - value) <= Decimal("0.000000005") and shown.as_tuple().exponent == -8


def test_one_line() -> None:
    assert one_line(ValueError("first\nsecond")) == "ValueError: first"
    assert one_line(RuntimeError()) == "RuntimeError"
    assert one_line("\n  detail here \nmore") == "detail here"
    assert one_line("x" * 1000, limit=10) == "x" * 10


def test_pg_message() -> None:
    """The database's own words, one line, without the exception type (a server error's primary message
    comes from its diagnostics; tests/sql and tests/db check it against a real server)."""
    assert pg_message(psycopg.errors.UndefinedTable('relation "x" does not exist\nLINE 1: select')) == \
        'relation "x" does not exist'
    assert pg_message(psycopg.OperationalError()) == "OperationalError"


@given(st.text())
def test_one_line_is_always_one_bounded_line(text: str) -> None:
    line = one_line(text)
    assert len(line) <= 300 and "\n" not in line and "\r" not in line


def test_validation_message_names_the_field() -> None:
    class Model(BaseModel):
        days: int = Field(ge=1)

    with pytest.raises(ValidationError) as caught:
        Model(days=0)
    where, what = validation_message(caught.value)
    assert where == "days" and "greater than or equal to 1" in what
