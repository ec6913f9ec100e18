"""`serve` logs JSON lines: one `tool_call` line per call, with who/what/how long, never tokens or arguments."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from unittest.mock import patch

import pytest
from fastmcp import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import logs
from gateway.logs import CallLine, JsonFormatter, configure_logging
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


# -- the per-call line: `CallLine` writes what `logger.info(message, extra=...)` would, in every set-up ----------

@contextmanager
def _logging_put_back() -> Iterator[None]:
    """configure_logging changes the root logger and logging's module switches: put them back."""
    root, switches = logging.getLogger(), ("logThreads", "logProcesses", "logMultiprocessing", "_srcfile")
    saved = (root.handlers[:], root.level, {name: getattr(logging, name) for name in switches}, logs._json_handler)
    calls = logging.getLogger("mcp_gateway.calls")
    saved_calls = (calls.handlers[:], calls.filters[:], calls.level, calls.propagate, calls.disabled)
    try:
        yield
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        for name, value in saved[2].items():
            setattr(logging, name, value)
        logs._json_handler = saved[3]
        calls.handlers[:], calls.filters[:] = saved_calls[0], saved_calls[1]
        calls.setLevel(saved_calls[2])
        calls.propagate, calls.disabled = saved_calls[3], saved_calls[4]


@pytest.fixture
def restored_logging() -> Iterator[None]:
    with _logging_put_back():
        yield


def _served_json(stream: io.StringIO) -> logging.StreamHandler:  # type: ignore[type-arg]
    configure_logging("json")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    return handler


@contextmanager
def _clock(created: float) -> Iterator[None]:
    with patch("time.time", return_value=created), patch("time.time_ns", return_value=int(created * 1e9)):
        yield


_CALL_EXTRA = {"event": "tool_call", "method": "tools/call", "tenant": "acme", "user": "alice",
               "session": "5f0c8a52-8f2e-4a43-9c57-2c5bd7f0a1d3", "tool": "echo", "status": "success",
               "duration_ms": 1.25}


@settings(max_examples=200, deadline=None)
@given(extra=st.dictionaries(_extra_names, _json_values, max_size=8), message=st.text(max_size=40),
       created=st.floats(0, 4_000_000_000))
def test_the_call_line_is_the_line_logging_writes(extra: dict[str, object], message: str, created: float) -> None:
    logger = logging.getLogger("mcp_gateway.calls")
    stream = io.StringIO()
    with _logging_put_back(), _clock(created):
        _served_json(stream)
        line = CallLine(logger)
        assert line._sole_json_handler() is not None  # this set-up takes the direct path
        line(message, extra)
        direct = stream.getvalue()
        stream.seek(0)
        stream.truncate()
        logger.info(message, extra=extra)
    assert direct == stream.getvalue() and direct.endswith("\n") and direct.count("\n") == 1


def _capture_handler(stream: io.StringIO) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s %(tool)s"))
    return handler


def _own_handler_only(logger: logging.Logger, other: io.StringIO) -> None:
    logger.addHandler(_capture_handler(other))
    logger.propagate = False


# Each set-up is applied to logging as `serve --log-format json` leaves it; `other` is a second handler's stream.
_SETUPS: dict[str, Callable[[logging.Logger, logging.Handler, io.StringIO], None]] = {
    "served as configured": lambda logger, handler, other: None,
    "a second handler on the root (a test's capture)":
        lambda logger, handler, other: logging.getLogger().addHandler(_capture_handler(other)),
    "a handler of the logger's own": lambda logger, handler, other: logger.addHandler(_capture_handler(other)),
    "a handler of its own, not propagating": lambda logger, handler, other: _own_handler_only(logger, other),
    "a filter on the logger": lambda logger, handler, other: logger.addFilter(lambda record: False),
    "a filter on the handler": lambda logger, handler, other: handler.addFilter(lambda record: False),
    "the handler raised to WARNING": lambda logger, handler, other: handler.setLevel(logging.WARNING),
    "the logger raised to WARNING": lambda logger, handler, other: logger.setLevel(logging.WARNING),
    "the logger disabled": lambda logger, handler, other: setattr(logger, "disabled", True),
    "logging.disable(INFO)": lambda logger, handler, other: logging.disable(logging.INFO),
    "another formatter on the handler": lambda logger, handler, other: handler.setFormatter(
        logging.Formatter("%(message)s/%(user)s")),
    "a JsonFormatter of another class": lambda logger, handler, other: handler.setFormatter(
        type("Shouting", (JsonFormatter,), {"format": lambda self, record: super(type(self), self).format(
            record).upper()})()),
    "the root's handler replaced": lambda logger, handler, other: setattr(
        logging.getLogger(), "handlers", [_capture_handler(other)]),
}


@pytest.mark.parametrize("setup", list(_SETUPS))
def test_the_call_line_writes_what_logging_would_in_every_set_up(restored_logging: None, setup: str) -> None:
    """Whatever handlers, filters, levels and formatters are in place, the call line reaches exactly what
    `logger.info` reaches, with the same text; it writes on its own only when nothing else could differ."""
    logger = logging.getLogger("mcp_gateway.calls")
    outputs = []
    for write in (lambda: CallLine(logger)("tool call", _CALL_EXTRA),
                  lambda: logger.info("tool call", extra=_CALL_EXTRA)):
        stream, other = io.StringIO(), io.StringIO()
        handler = _served_json(stream)
        _SETUPS[setup](logger, handler, other)
        try:
            with _clock(1_764_000_000.125):
                write()
        finally:
            logging.disable(logging.NOTSET)
            logger.propagate, logger.disabled = True, False
            logger.handlers[:], logger.filters[:] = [], []
            logger.setLevel(logging.NOTSET)
        outputs.append((stream.getvalue(), other.getvalue()))
    assert outputs[0] == outputs[1]
    if setup == "served as configured":
        assert json.loads(outputs[0][0]) == {"ts": "2025-11-24T16:00:00.125+00:00", "level": "info",
                                             "logger": "mcp_gateway.calls", "msg": "tool call", **_CALL_EXTRA}


def test_the_call_line_in_dev_text_format(restored_logging: None) -> None:
    configure_logging("text")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    line = CallLine(logging.getLogger("mcp_gateway.calls"))
    assert line._sole_json_handler() is None
    line("tool call", _CALL_EXTRA)
    assert " INFO    mcp_gateway.calls: tool call method=tools/call tenant=acme user=alice " in stream.getvalue()


def test_a_call_line_that_cannot_be_written_is_reported_as_logging_reports_it(
        restored_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk full")

    _served_json(Broken())
    CallLine(logging.getLogger("mcp_gateway.calls"))("tool call", _CALL_EXTRA)  # does not raise
    report = capsys.readouterr().err
    assert "--- Logging error ---" in report and "OSError: disk full" in report and "tool call" in report
