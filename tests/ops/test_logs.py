"""`serve` logs JSON lines: one `tool_call` line per call, with who/what/how long, never tokens or arguments."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

import pytest
from fastmcp import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.logs import JsonFormatter
from tests.gateway_proc import GatewayProcess, make_jwt


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_serve_logs_one_json_tool_call_line_per_call(gateway: GatewayProcess) -> None:
    token = make_jwt("alice", "acme")
    secret_argument = "do-not-log-this-argument-7f3a"
    async with Client(gateway.mcp_url, auth=token, mode="legacy") as client:
        await client.call_tool("echo", {"text": secret_argument})
        await client.call_tool("add", {"a": 40, "b": 2})
        await client.call_tool("explode", {"reason": "kaput"}, raise_on_error=False)
        await client.call_tool("add", {"a": secret_argument, "b": 1}, raise_on_error=False)  # invalid arguments

    deadline = time.monotonic() + 10
    while True:
        text = gateway.log()
        calls = [r for r in json_lines(text) if r.get("event") == "tool_call"]
        if len(calls) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    records = json_lines(text)  # every line parses: nothing but JSON on the log stream
    assert records and all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    assert [(c["tool"], c["status"]) for c in calls] == [("echo", "success"), ("add", "success"),
                                                          ("explode", "error"), ("add", "error")]
    for line in calls:
        assert line["user"] == "alice" and line["tenant"] == "acme"
        assert line["session"] and isinstance(line["duration_ms"], (int, float)) and line["duration_ms"] >= 0
    assert len({c["session"] for c in calls}) == 1
    assert token not in text and token.split(".")[2] not in text
    assert secret_argument not in text
    assert "kaput" not in "".join(json.dumps(c) for c in calls)


# -- the JSON line itself: what `JsonFormatter` writes is json.dumps of the record's fields and extras ----------

_STANDARD_NAMES = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "color_message"}


def _reference_line(formatter: JsonFormatter, record: logging.LogRecord) -> str:
    """What the line must be: every attribute that is not the record's own, in order, after the four fixed fields."""
    ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
    data = {"ts": ts, "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
    data.update({k: v for k, v in vars(record).items() if k not in _STANDARD_NAMES and not k.startswith("_")})
    if record.exc_info:
        data["exc"] = formatter.formatException(record.exc_info)
    return json.dumps(data, default=str)


class _Opaque:
    def __str__(self) -> str:
        return "opaque \u00e9"


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.builds(_Opaque),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
_extra_names = st.text(min_size=1, max_size=12).filter(lambda k: k not in _STANDARD_NAMES and k not in {
    "ts", "level", "logger", "msg", "exc"})


@settings(max_examples=300, deadline=None)
@given(extra=st.dictionaries(_extra_names, _json_values, max_size=8), moved=st.sampled_from([None, "exc_text", "msg"]),
       message=st.text(max_size=40), created=st.floats(0, 4_000_000_000))
def test_the_json_line_is_json_dumps_of_fields_and_extras(extra: dict[str, object], moved: str | None, message: str,
                                                          created: float) -> None:
    formatter = JsonFormatter()
    record = logging.getLogger("mcp_gateway.calls").makeRecord(
        "mcp_gateway.calls", logging.INFO, "", 0, message, (), None, extra=extra)
    record.created = created
    if moved is not None:  # an attribute of its own deleted and set again now comes after the extras
        value = getattr(record, moved)
        delattr(record, moved)
        setattr(record, moved, value)
    assert formatter.format(record) == _reference_line(formatter, record)


def test_a_record_class_of_its_own_and_a_circular_extra() -> None:
    class Tagged(logging.LogRecord):
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.tag = "set before the record's own attributes"
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    formatter = JsonFormatter()
    record = Tagged("mcp_gateway.calls", logging.INFO, "", 0, "hello %s", ("you",), None)
    record.event = "tool_call"
    line = formatter.format(record)
    assert line == _reference_line(formatter, record)
    assert json.loads(line)["tag"] == "set before the record's own attributes"
    loop: list[object] = []
    loop.append(loop)
    plain = logging.LogRecord("x", logging.INFO, "", 0, "m", (), None)
    plain.loop = loop
    with pytest.raises(ValueError, match="Circular reference"):
        formatter.format(plain)
