"""Logging: JSON lines for `serve` (machines read them), text for `dev` (people do)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import islice
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

try:  # as json.encoder imports it
    from _json import make_encoder as c_make_encoder
except ImportError:  # pragma: no cover - CPython always has it
    c_make_encoder = None  # type: ignore[assignment, misc]

# What a LogRecord's __init__ sets, in its order; `extra` and anything set later come after them.
_OWN_ATTRIBUTES = list(vars(logging.LogRecord("", 0, "", 0, "", (), None)))
_OWN_COUNT = len(_OWN_ATTRIBUTES)
# Not extra fields: the record's own attributes, and uvicorn's `color_message` (the same message with
# terminal colour codes and unformatted %d/%s placeholders, meant for its own coloured formatter only).
_STANDARD = set(_OWN_ATTRIBUTES) | {"message", "asctime", "color_message"}
_ENCODER = json.JSONEncoder(default=str)  # as json.dumps(data, default=str)
# What JSONEncoder.iterencode hands json's C encoder after the per-call `markers`, read off _ENCODER itself.
_C_ENCODER_ARGS: tuple[Any, ...] = (
    _ENCODER.default, encode_basestring_ascii if _ENCODER.ensure_ascii else encode_basestring, _ENCODER.indent,
    _ENCODER.key_separator, _ENCODER.item_separator, _ENCODER.sort_keys, _ENCODER.skipkeys, _ENCODER.allow_nan)


def _encode(data: dict[str, Any]) -> str:
    """`_ENCODER.encode(data)` to the letter, for a dict: the C encoder that method builds for each call
    (a fresh `markers` dict keeps its circular-reference check), without the Python steps around it."""
    if c_make_encoder is None:
        return _ENCODER.encode(data)
    return "".join(c_make_encoder({}, *_C_ENCODER_ARGS)(data, 0))


class JsonFormatter(logging.Formatter):
    """One JSON object per line. Runs once per tool call: the timestamp's seconds are formatted once
    per second (same text as `datetime.isoformat(timespec="milliseconds")` in UTC)."""

    _second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        data = self._head(record.created, record.levelname.lower(), record.name, record.getMessage())
        attributes = vars(record)
        items: Iterable[tuple[str, Any]] = attributes.items()
        if list(islice(attributes, _OWN_COUNT)) == _OWN_ATTRIBUTES:  # the usual record: only what follows is extra
            items = islice(items, _OWN_COUNT, None)
        _add_extra(data, items)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return _encode(data)

    def line(self, created: float, level: str, name: str, message: str, extra: dict[str, Any]) -> str:
        """What `format` writes for a record made by `logger.log(level, message, extra=extra)` at `created`."""
        data = self._head(created, level, name, message)
        _add_extra(data, extra.items())
        return _encode(data)

    def _head(self, created: float, level: str, name: str, message: str) -> dict[str, Any]:
        whole = int(created)
        micros = round((created - whole) * 1e6)  # as datetime.fromtimestamp rounds
        if micros >= 1_000_000:
            whole, micros = whole + 1, micros - 1_000_000
        second, prefix = self._second
        if whole != second:
            prefix = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (whole, prefix)
        return {"ts": f"{prefix}.{micros // 1000:03d}+00:00", "level": level, "logger": name, "msg": message}


def _add_extra(data: dict[str, Any], items: Iterable[tuple[str, Any]]) -> None:
    for key, value in items:
        if key not in _STANDARD and key[:1] != "_":
            data[key] = value


# The handler `configure_logging("json")` installed on the root logger, while it is still there.
_json_handler: logging.StreamHandler[Any] | None = None


class CallLine:
    """One INFO line of `logger`, written exactly as `logger.info(message, extra=extra)` writes it.

    Used for the line every tool call logs. When logging is as `configure_logging("json")` left it (the
    logger enabled for INFO, no filters, its only handler anywhere up the tree the root's JSON handler), the
    line is formatted and written here: the LogRecord (~30 attributes), the handler chain and the formatter's
    scan of the record cost ~3% of a call, for a line whose every field is already at hand. Any other set-up
    (`dev`'s text lines, another handler or a filter, a raised level, a test's capture) takes the usual path.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def __call__(self, message: str, extra: dict[str, Any]) -> None:
        handler = self._sole_json_handler()
        if handler is None:
            self.logger.info(message, extra=extra)
            return
        formatter = handler.formatter
        assert isinstance(formatter, JsonFormatter)  # checked by _sole_json_handler
        with handler.lock:  # type: ignore[union-attr]  # as Handler.handle holds it around emit
            try:
                handler.stream.write(formatter.line(time.time(), "info", self.logger.name, message, extra)
                                     + handler.terminator)
                handler.stream.flush()
            except RecursionError:  # as StreamHandler.emit
                raise
            except Exception:
                handler.handleError(self.logger.makeRecord(self.logger.name, logging.INFO, "(unknown file)", 0,
                                                           message, (), None, extra=extra))

    def _sole_json_handler(self) -> logging.StreamHandler[Any] | None:
        """The handler the line would reach, if it is `_json_handler` alone and nothing would filter it."""
        handler, logger = _json_handler, self.logger
        if (handler is None or type(handler.formatter) is not JsonFormatter or handler.filters
                or handler.level > logging.INFO or logger.filters or not logger.isEnabledFor(logging.INFO)):
            return None
        reached = False
        node: logging.Logger | None = logger
        while node is not None:  # as Logger.callHandlers walks the tree
            for other in node.handlers:
                if other is not handler:
                    return None
                reached = True
            node = node.parent if node.propagate else None
        return handler if reached else None


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra: dict[str, Any] = {}
        _add_extra(extra, vars(record).items())
        extra.pop("event", None)
        if extra:
            text += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return text


def configure_logging(fmt: str = "json", level: int = logging.INFO) -> None:
    global _json_handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    _json_handler = handler if fmt == "json" else None
    root.setLevel(level)
    # Neither format prints a record's thread, process or source line: do not gather them for every record
    # (one per tool call). The logging HOWTO's "Optimization" switches.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    for noisy in ("httpx", "httpx2", "httpcore", "mcp", "fastmcp", "sse_starlette", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # FastMCP installs its own (rich, non-JSON) handler at import: route its records through ours.
    fastmcp_logger = logging.getLogger("fastmcp")
    fastmcp_logger.handlers[:] = []
    fastmcp_logger.propagate = True
