"""Units of the HTTP hygiene defences: Origin/Host guard, CSV cells, date parsing, metric labels, metrics token.

The same defences are exercised end to end over real HTTP in tests/api/test_http_hygiene.py and
tests/ops/test_http_guard.py; here the edge cases are enumerated and fuzzed quickly.
"""

from __future__ import annotations

import asyncio
import csv
import io
import string
from datetime import UTC, date, datetime
from decimal import Decimal

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway.csvsafe import csv_cell, to_csv
from gateway.http.metric_labels import OTHER, UNKNOWN, ToolLabels
from gateway.http.metrics_auth import bearer_matches, protect_metrics
from gateway.http.origins import (
    OriginMiddleware,
    check_hosts,
    check_origins,
    default_origins,
    guard_http,
    normalize_origin,
)
from gateway.settings import Settings
from gateway.store.reports import MAX_DATE, MIN_DATE, ReportError, parse_day, resolve_range

# -- Origin ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "normal"), [
    ("http://h", "http://h"), ("http://h:80", "http://h"), ("HTTP://H:80/", "http://h"),
    ("https://App.Example:443", "https://app.example"), ("https://app.example:8443", "https://app.example:8443"),
    ("http://[::1]:8051", "http://[::1]:8051"), ("http://127.0.0.1:8051/", "http://127.0.0.1:8051"),
    ("vscode-webview://abc123", "vscode-webview://abc123"),
])
def test_origins_are_compared_normalised(raw: str, normal: str) -> None:
    assert normalize_origin(raw) == normal


@pytest.mark.parametrize("raw", [
    "null", "", " ", "h", "http://", "http://h/path", "http://h?q", "http://h#f", "http://u@h", "http://h:99999",
    "http://h:x", "http://e\tvil.example", "http://évil.example", "http://h//", "http://h\r\n", "*",
])
def test_what_is_not_an_origin(raw: str) -> None:
    assert normalize_origin(raw) is None


def test_configured_origins_are_checked() -> None:
    assert check_origins(["https://A.example:443/", "http://x:80"]) == ["https://a.example", "http://x"]
    assert check_origins(["*"]) == ["*"]
    cases: list[tuple[list[str], str]] = [(["null"], "null"), (["https://a.example/app"], "not an origin"),
                                          (["*", "https://a.example"], "alone")]
    for bad, needle in cases:
        with pytest.raises(ValueError, match=needle):
            check_origins(bad)
    assert check_hosts(["Gateway.Example", "*.example.com", "10.0.0.1", "[::1]"]) == \
        ["gateway.example", "*.example.com", "10.0.0.1", "[::1]"]
    for bad_host in ("https://gateway.example", "gateway.example:443", "a.*.example", "*example.com"):
        with pytest.raises(ValueError):
            check_hosts([bad_host])


def test_settings_validate_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_GATEWAY_ALLOWED_ORIGINS", " https://App.example , http://localhost:3000/ ")
    monkeypatch.setenv("MCP_GATEWAY_ALLOWED_HOSTS", "gateway.example,*.internal")
    monkeypatch.setenv("MCP_GATEWAY_METRICS_TOKEN", " spaces kept ")
    s = Settings()
    assert s.allowed_origins == ["https://app.example", "http://localhost:3000"]
    assert s.allowed_hosts == ["gateway.example", "*.internal"]
    assert s.metrics_token is not None and s.metrics_token.get_secret_value() == " spaces kept "
    for name, value in [("MCP_GATEWAY_ALLOWED_ORIGINS", "https://a.example/x"),
                        ("MCP_GATEWAY_ALLOWED_ORIGINS", "https://a.example,null"),
                        ("MCP_GATEWAY_ALLOWED_HOSTS", "https://a.example")]:
        monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError):
            Settings()
        monkeypatch.delenv(name)
    for name in ("MCP_GATEWAY_ALLOWED_ORIGINS", "MCP_GATEWAY_ALLOWED_HOSTS", "MCP_GATEWAY_METRICS_TOKEN"):
        monkeypatch.setenv(name, "")  # empty (compose's ${X:-}): the default, not "allow nothing"
    s = Settings()
    assert s.allowed_origins is None and s.allowed_hosts is None and s.metrics_token is None


def test_default_origins() -> None:
    assert default_origins("https://gateway.example/") == ["https://gateway.example"]
    assert default_origins("https://gateway.example:443/base") == ["https://gateway.example"]
    assert default_origins("http://gw.internal:8051") == ["http://gw.internal:8051"]
    loopback = ["http://127.0.0.1:8051", "http://localhost:8051", "http://[::1]:8051"]
    assert default_origins("http://127.0.0.1:8051") == loopback
    assert default_origins("http://localhost:8051") == loopback
    assert default_origins("http://0.0.0.0:8051") == loopback  # the compose default is reached as localhost


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("reached")


def _guarded_client(**kwargs: object) -> httpx.AsyncClient:
    inner = Starlette(routes=[Route(p, _ok, methods=["GET", "POST"]) for p in
                              ("/mcp", "/sse", "/messages/", "/api/sql", "/health", "/authorize", "/mcpx")])
    app = guard_http(inner, **{"public_url": "http://127.0.0.1:8051", "allowed_origins": None,
                               "allowed_hosts": None, **kwargs})  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8051")


async def test_origin_guard_paths_and_bodies() -> None:
    async with _guarded_client() as client:
        for path in ("/mcp", "/sse", "/messages/", "/api/sql"):
            assert (await client.post(path)).text == "reached"  # no Origin: not a browser, passes
            for origin in ("http://127.0.0.1:8051", "http://LOCALHOST:8051/", "http://[::1]:8051"):
                assert (await client.post(path, headers={"Origin": origin})).text == "reached", (path, origin)
            for origin in ("https://evil.example", "null", "http://127.0.0.1:8052", "https://127.0.0.1:8051",
                           "http://127.0.0.1.evil.example:8051", "", "garbage"):
                r = await client.post(path, headers={"Origin": origin})
                assert r.status_code == 403 and r.headers["content-type"] == "application/json", (path, origin)
                body = r.json()
                if path == "/api/sql":
                    assert body["error"] == "forbidden_origin" and "\n" not in body["detail"]
                else:  # JSON-RPC error without id, as the transport spec allows
                    assert body["jsonrpc"] == "2.0" and body["id"] is None
                    assert body["error"]["code"] == -32600 and "Origin" in body["error"]["message"]
                assert "access-control-allow-origin" not in r.headers
        # Not guarded: metadata, OAuth pages, look-alike paths.
        for path in ("/health", "/authorize", "/mcpx"):
            assert (await client.get(path, headers={"Origin": "https://evil.example"})).text == "reached"
        # Two Origin headers: both must be allowed.
        r = await client.post("/mcp", headers=[("Origin", "http://127.0.0.1:8051"), ("Origin", "https://evil.example")])
        assert r.status_code == 403


async def test_origin_allow_list_star_and_host_list() -> None:
    async with _guarded_client(allowed_origins=["https://app.example"]) as client:
        assert (await client.post("/mcp", headers={"Origin": "https://app.example:443"})).status_code == 200
        # The list adds to the gateway's own origin (its dashboard), it does not replace it.
        assert (await client.post("/mcp", headers={"Origin": "http://127.0.0.1:8051"})).status_code == 200
        assert (await client.post("/mcp", headers={"Origin": "https://other.example"})).status_code == 403
    async with _guarded_client(allowed_origins=["*"]) as client:
        assert (await client.post("/mcp", headers={"Origin": "https://anyone.example"})).status_code == 200
        assert (await client.post("/mcp", headers={"Origin": "null"})).status_code == 403  # never
    async with _guarded_client(allowed_hosts=["127.0.0.1", "*.example.com"]) as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/health", headers={"Host": "a.example.com:8051"})).status_code == 200
        for host in ("evil.example", "example.com.evil.example", "127.0.0.2"):
            r = await client.get("/health", headers={"Host": host})
            assert r.status_code == 400, host


@settings(max_examples=300, deadline=None)
@given(origin=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
       | st.builds(lambda s, h, p: f"{s}://{h}{p}", st.sampled_from(["http", "https", "HTTP", "ws", "ftp"]),
                   st.sampled_from(["127.0.0.1", "localhost", "[::1]", "evil.example", "127.0.0.1.nip.io",
                                    "LOCALHOST", "0.0.0.0", "[::ffff:127.0.0.1]"]),
                   st.sampled_from(["", ":80", ":8051", ":08051", ":443", ":8051/", "/", ":8051/x", "@x"])))
def test_only_allowed_origins_pass(origin: str) -> None:
    guard = OriginMiddleware(lambda *a: None, default_origins("http://127.0.0.1:8051"))  # type: ignore[arg-type]
    allowed = {"http://127.0.0.1:8051", "http://localhost:8051", "http://[::1]:8051"}
    expected = normalize_origin(origin) in allowed
    assert guard.allows(origin) is expected
    if expected:  # what passes is exactly one of the three, spelled some harmless way
        assert origin.strip(" ").rstrip("/").lower().replace(":08051", ":8051") in allowed


# -- CSV ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "cell"), [
    ("=1+1", "'=1+1"), ("+1", "+1"), ("-1", "-1"), ("-1.5e3", "-1.5e3"), ("-.5", "-.5"), ("-1+1", "'-1+1"),
    ("- 1", "'- 1"), ("-1\n", "'-1\n"), ("-", "'-"), ("-e5", "'-e5"), ("+0x10", "'+0x10"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'\t=1"),
    ("\r=1", "'\r=1"), ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'), ("a=1", "a=1"),
    ("", ""), (None, ""), (-1, "-1"), (-2.5, "-2.5"), (Decimal("-0.50000000"), "-0.50000000"), (0, "0"),
    (float("-inf"), "'-inf"), (True, "True"), ({"a": "=x"}, '{"a": "=x"}'), (["-x"], '["-x"]'),
    (date(2026, 11, 1), "2026-11-01"),
])
def test_csv_cells(value: object, cell: str) -> None:
    assert csv_cell(value) == cell


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=20), st.integers(), st.decimals(allow_nan=False, allow_infinity=False),
                          st.none()), min_size=1, max_size=6))
def test_no_text_cell_starts_a_formula(row: list[object]) -> None:
    parsed = list(csv.reader(io.StringIO(to_csv(["h"] * len(row), [row]), newline="")))[1]
    for value, cell in zip(row, parsed, strict=True):
        if isinstance(value, str):
            assert cell in (value, "'" + value)
            if cell.startswith(("=", "+", "-", "@", "\t", "\r")):  # only a plain number literal may
                assert Decimal(cell).is_finite() and cell.strip() == cell and "(" not in cell
        elif value is not None:
            assert Decimal(cell) == value  # numbers stay numbers, negative ones too


# -- dates ----------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


@pytest.mark.parametrize("text", [
    "0000-01-01", "0001-01-01", "1999-12-31", "9999-12-31", "10000-01-01", "99999-01-01",
    "0001-01-01T00:00+01:00", "9999-12-31T23:00-05:00", "9999-12-30T23:59:59-00:01", "2026-02-30",
    "2026-11-01T25:00", "2026-11-01T10:00+25:00", "999999w", "999999d", "yesterdayish", "\x00", "",
])
def test_bad_dates_are_report_errors(text: str) -> None:
    with pytest.raises(ReportError) as caught:
        parse_day(text, "until", now=NOW)
    assert caught.value.param == "until" and str(caught.value).startswith("until: ") and "\n" not in str(caught.value)


def test_range_edges() -> None:
    assert parse_day("2000-01-01", "since") == MIN_DATE and parse_day("9999-12-30", "until") == MAX_DATE
    assert parse_day("9999d", "since", now=NOW) == MIN_DATE  # relative forms clamp at the first supported day
    with pytest.raises(ReportError, match="after until") as caught:
        resolve_range("2026-11-10", "2026-11-01", now=NOW)
    assert caught.value.param == "since"


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=70) | st.from_regex(r"\A-?\d{1,7}-\d{1,3}-\d{1,3}([T ]\d{1,2}:\d{2}([+-]\d{2}:\d{2})?)?\Z")
       | st.from_regex(r"\A\d{1,9}[dhwDHW]\Z"))
def test_dates_parse_or_raise_report_error(text: str) -> None:
    try:
        day = parse_day(text, "since", now=NOW)
    except ReportError as exc:
        assert exc.param == "since" and "\n" not in str(exc)
    else:
        assert day is not None and MIN_DATE <= day <= MAX_DATE


# -- tool labels ----------------------------------------------------------------------------------


async def test_unknown_tool_names_share_one_label() -> None:
    labels = ToolLabels(cap=5, refresh_interval=3600)

    async def registry() -> list[str]:
        return ["echo", "add", "explode"]

    labels.source = registry
    await labels.refresh()
    assert labels.label("explode", "error") == "explode"  # registered: its own label even when failing
    assert labels.label("echo", "denied") == "echo"
    names = {labels.label(f"x{i}", "error" if i % 2 else "denied") for i in range(1000)}
    assert names == {UNKNOWN}
    assert labels.label("late_tool", "success") == "late_tool"  # ran, so it exists
    assert labels.label(None, "success") == "-"
    for i in range(10):
        labels.label(f"real_{i}", "success")
    assert labels.label("real_9", "success") == OTHER  # the cap holds for real tools too


async def test_registry_refresh_is_rate_limited_and_failures_are_harmless() -> None:
    calls = 0

    async def flaky() -> list[str]:
        nonlocal calls
        calls += 1
        raise RuntimeError("upstream down")

    labels = ToolLabels(refresh_interval=3600)
    labels.source = flaky
    await labels.start()
    for i in range(100):
        assert labels.label(f"nope{i}", "error") == UNKNOWN
    await asyncio.sleep(0)  # let the one background refresh run
    await labels.stop()
    assert calls == 1


# -- metrics token --------------------------------------------------------------------------------


def test_bearer_matches_exactly() -> None:
    token = b"s3cret-metrics-token"
    assert bearer_matches(b"Bearer s3cret-metrics-token", token)
    assert bearer_matches(b"bearer s3cret-metrics-token", token)
    for header in (None, b"", b"Bearer", b"Bearer ", b"Bearer s3cret-metrics-toke", b"Bearer s3cret-metrics-token ",
                   b"Basic s3cret-metrics-token", b"s3cret-metrics-token", b"Bearer  s3cret-metrics-token"):
        assert not bearer_matches(header, token), header


async def test_metrics_endpoint_protection() -> None:
    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("metrics")

    assert protect_metrics(endpoint, None) is endpoint
    app = Starlette(routes=[Route("/metrics", protect_metrics(endpoint, SecretStr("tok-" + string.ascii_letters)))])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        denied = await client.get("/metrics")
        assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Bearer")
        assert "tok-" not in denied.text
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer tok-"})
        assert wrong.status_code == 401
        ok = await client.get("/metrics", headers={"Authorization": "Bearer tok-" + string.ascii_letters})
        assert ok.status_code == 200 and ok.text == "metrics"
