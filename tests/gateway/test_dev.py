"""`mcp-gateway dev` as a person uses it: every command and config it prints works when pasted.

One `dev` process (embedded PostgreSQL, as on a fresh machine) serves the module; each test takes
what dev printed on stdout and runs it as printed: the curl, the Python script, the next commands;
each client config is checked for the fields that client reads and then used to connect.

The Claude Desktop config runs for real: npx installs `mcp-remote` (pinned) and the test talks to it
over stdio as Claude Desktop does. Not run: the `claude` binary (the `@anthropic-ai/claude-code` npm
package ships a large native binary per platform, too heavy to install in a test); its command line is
checked argument by argument and its URL and header are used to connect.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport, StreamableHttpTransport

from tests.gateway.conftest import wait_for
from tests.gateway_proc import REPO, free_port
from tests.pg import DatabaseFactory, Server

MCP_REMOTE = "mcp-remote@0.1.38"  # what Claude Desktop runs; pinned so the test is repeatable
VENV_BIN = str(Path(sys.executable).parent)  # where `mcp-gateway` is, as after `pip install -e .`


@dataclass
class Dev:
    proc: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    data_dir: Path
    stdout: Path
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def printed(self) -> str:
        return self.stdout.read_text()

    def token(self) -> str:
        found = re.search(r"Token:\s+(\S+)", self.printed())
        assert found, self.printed()
        return found.group(1)

    def sections(self) -> dict[str, str]:
        """Title (the line ending in ':') -> the text under it, up to the next blank line."""
        after_box = self.printed().split("╯", 1)[1]
        sections = {}
        for block in re.split(r"\n\s*\n", after_box.strip()):
            title, _, text = block.partition("\n")
            sections[title.rstrip(":")] = text
        return sections

    def section(self, starts_with: str) -> str:
        matches = [text for title, text in self.sections().items() if title.startswith(starts_with)]
        assert len(matches) == 1, (starts_with, list(self.sections()))
        return matches[0]

    def shell(self, command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", command], env=self.env, capture_output=True, text=True, timeout=120,
                              cwd=str(cwd or self.data_dir))


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_dev(env: dict[str, str], data_dir: Path, name: str, port: int) -> Dev:
    out, err = data_dir / f"{name}.out", data_dir / f"{name}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(["mcp-gateway", "dev", "--port", str(port)], env=env, stdout=stdout, stderr=stderr,
                                cwd=str(data_dir))
    dev = Dev(proc, port, env, data_dir, out, err)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"dev exited {proc.returncode}:\n{dev.printed()}\n{err.read_text()}")
        return "Ctrl-C stops the gateway." in dev.printed()  # printed last, once it serves

    wait_for(ready, 90, "dev to print its configs")
    assert _healthy(port), "dev printed before it served"
    return dev


@pytest.fixture(scope="module")
def dev(pg_server: Server, db_factory: DatabaseFactory) -> Iterator[Dev]:
    data_dir = Path(tempfile.mkdtemp(prefix="mcpgw-dev-"))  # short: the embedded socket lives here
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    env.update({"MCP_GATEWAY_DATA_DIR": str(data_dir), "COLUMNS": "80", "PYTHONPATH": str(REPO),
                "PATH": VENV_BIN + os.pathsep + env.get("PATH", "")})
    database = None
    if pg_server.embedded_dir is None:  # no local PostgreSQL binaries: use the test server instead
        database = db_factory.create()
        env.update(database.env())
    running = start_dev(env, data_dir, "dev1", free_port())
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait(10)
        subprocess.run(["mcp-gateway", "db", "stop"], env=env, capture_output=True, timeout=60)
        if database is not None:
            db_factory.drop(database)
        shutil.rmtree(data_dir, ignore_errors=True)


async def call_echo(url: str, headers: dict[str, str]) -> str:
    async with Client(StreamableHttpTransport(url, headers=headers)) as client:
        return (await client.call_tool("echo", {"text": "from a pasted config"})).data  # type: ignore[no-any-return]


# -- what the box says ---------------------------------------------------------------------------------


def test_the_box_says_who_the_token_is_and_where_the_dashboard_is(dev: Dev) -> None:
    printed = dev.printed()
    assert f"MCP URL:   {dev.url}" in printed
    assert "Token for: user dev, tenant dev, role admin" in printed
    dashboard = re.search(r"Dashboard: (\S+)", printed)
    assert dashboard and dashboard.group(1) == f"http://127.0.0.1:{dev.port}/dashboard"
    assert httpx.get(dashboard.group(1), timeout=10).status_code == 200
    assert "\x1b[" not in printed, "no terminal codes when stdout is not a terminal"
    assert "OAuth clients" in printed and "with the URL alone" in printed


async def test_whoami_agrees_with_the_box(dev: Dev) -> None:
    async with Client(dev.url, auth=dev.token()) as client:
        me = (await client.call_tool("whoami", {})).structured_content
    assert (me["tenant_id"], me["user_id"], me["role"]) == ("dev", "dev", "admin")


# -- every client config, one block per client, as that client reads it --------------------------------


async def test_claude_code_command(dev: Dev) -> None:
    argv = shlex.split(dev.section("Claude Code (run once)"))
    assert argv[:6] == ["claude", "mcp", "add", "--transport", "http", "mcp-gateway"]
    assert argv[6] == dev.url and argv[7] == "--header" and len(argv) == 9
    name, _, value = argv[8].partition(": ")
    assert name == "Authorization" and value == f"Bearer {dev.token()}"
    assert await call_echo(argv[6], {name: value}) == "from a pasted config"


@pytest.mark.parametrize(("title", "servers_key", "fields", "url_field", "type_value"), [
    ("Claude Code project file", "mcpServers", {"type", "url", "headers"}, "url", "http"),
    ("Cursor", "mcpServers", {"url", "headers"}, "url", None),
    ("Windsurf", "mcpServers", {"serverUrl", "headers"}, "serverUrl", None),  # Windsurf ignores `url`
    ("VS Code", "servers", {"type", "url", "headers"}, "url", "http"),
])
async def test_http_client_configs(dev: Dev, title: str, servers_key: str, fields: set[str], url_field: str,
                                   type_value: str | None) -> None:
    config = json.loads(dev.section(title))
    assert list(config) == [servers_key]
    entry = config[servers_key]["mcp-gateway"]
    assert set(entry) == fields, entry
    if type_value is not None:
        assert entry["type"] == type_value
    assert entry[url_field] == dev.url and entry["headers"] == {"Authorization": f"Bearer {dev.token()}"}
    assert await call_echo(entry[url_field], entry["headers"]) == "from a pasted config"


async def test_claude_desktop_config_through_mcp_remote(dev: Dev) -> None:
    config = json.loads(dev.section("Claude Desktop"))
    entry = config["mcpServers"]["mcp-gateway"]
    assert set(entry) == {"command", "args", "env"} and entry["command"] == "npx"
    assert entry["args"] == ["-y", "mcp-remote", dev.url, "--header", "Authorization:${AUTH_HEADER}"]
    if shutil.which("npx") is None:
        pytest.fail("npx (Node.js) is needed to run mcp-remote as Claude Desktop does")
    # Run as Claude Desktop would: its command, args and env; npx installs mcp-remote (pinned here).
    args = [MCP_REMOTE if a == "mcp-remote" else a for a in entry["args"]]
    transport = StdioTransport(entry["command"], args, env=dev.env | entry["env"])
    async with Client(transport, mode="legacy", timeout=60) as client:  # Claude Desktop speaks the handshake era
        assert (await client.call_tool("echo", {"text": "through mcp-remote"})).data == "through mcp-remote"


# -- commands run exactly as printed ---------------------------------------------------------------------


def test_curl_as_printed(dev: Dev) -> None:
    result = dev.shell(dev.section("curl"))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert "error" not in answer, answer
    assert answer["result"]["content"][0]["text"] == "hello"


def test_python_script_as_printed(dev: Dev, tmp_path: Path) -> None:
    title = next(t for t in dev.sections() if t.startswith("Python"))
    script_name = re.search(r"save as (\S+),", title)
    assert script_name
    (tmp_path / script_name.group(1)).write_text(dev.section("Python") + "\n")
    result = dev.shell(f"python {script_name.group(1)}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "5", "add(2, 3) is 5: integers in, an integer out"
    assert "'tenant_id': 'dev'" in lines[1]


def test_next_commands_as_printed(dev: Dev) -> None:
    commands = dev.section("Next, in another terminal").splitlines()
    assert len(commands) == 3 and all(c.startswith("mcp-gateway ") for c in commands)
    # The calls made through the configs above reach the report within the writer's flush interval.
    wait_for(lambda: "echo" in dev.shell(commands[0]).stdout, 15, "echo in the cost report")
    results = [dev.shell(command) for command in commands]
    for command, result in zip(commands, results, strict=True):
        assert result.returncode == 0, (command, result.stderr)
    report, sql, token = (r.stdout for r in results)
    assert "echo" in report and "echo" in sql
    assert "tool_name" in sql
    assert token.startswith("mcpgw_") and token.count("\n") == 1


# -- docs/clients.md: its examples, run against the same server ----------------------------------------

DOCS_URL = "https://gateway.example.com/mcp"


def fenced(markdown: str, heading: str, lang: str) -> list[str]:
    """The `lang` code blocks under `heading` (up to the next heading of the same level)."""
    level = heading.split(" ", 1)[0]
    section = markdown.split(heading + "\n", 1)[1]
    section = re.split(rf"\n{level} ", section, maxsplit=1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def clients_md() -> str:
    return (REPO / "docs" / "clients.md").read_text()


def test_docs_clients_python_and_curl_run(dev: Dev, tmp_path: Path) -> None:
    env_with_token = dev.env | {"MCP_GATEWAY_TOKEN": dev.token()}
    (python,) = fenced(clients_md(), "## SDKs and scripts", "python")
    (tmp_path / "example.py").write_text(python.replace(DOCS_URL, dev.url))
    ran = subprocess.run([sys.executable, "example.py"], env=env_with_token, capture_output=True, text=True,
                         timeout=60, cwd=str(tmp_path))
    assert ran.returncode == 0 and "'tenant_id': 'dev'" in ran.stdout, ran.stderr
    (curl,) = fenced(clients_md(), "## SDKs and scripts", "bash")
    ran = subprocess.run(["bash", "-c", curl.replace(DOCS_URL, dev.url)], env=env_with_token, capture_output=True,
                         text=True, timeout=60)
    answer = json.loads(ran.stdout)
    assert "error" not in answer, answer
    assert json.loads(answer["result"]["content"][0]["text"])["user_id"] == "dev"


def test_docs_clients_doctor_runs(dev: Dev) -> None:
    (doctor,) = [b for b in fenced(clients_md(), "# Connecting MCP clients", "bash") if "doctor" in b]
    ran = subprocess.run(["bash", "-c", doctor.replace(DOCS_URL, dev.url)],
                         env=dev.env | {"MCP_GATEWAY_TOKEN": dev.token()}, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr


@pytest.mark.parametrize(("heading", "servers_key", "fields", "type_value"), [
    ("## Claude Code", "mcpServers", {"type", "url", "headers"}, "http"),
    ("## Claude Desktop (through `mcp-remote`)", "mcpServers", {"command", "args", "env"}, None),
    ("## Cursor", "mcpServers", {"url", "headers"}, None),
    ("## Windsurf", "mcpServers", {"serverUrl", "headers"}, None),
    ("## Cline", "mcpServers", {"type", "url", "headers", "disabled"}, "streamableHttp"),
    ("## VS Code (GitHub Copilot agent mode)", "servers", {"type", "url", "headers"}, "http"),
])
def test_docs_clients_configs_have_the_fields_each_client_reads(heading: str, servers_key: str, fields: set[str],
                                                                 type_value: str | None) -> None:
    (block,) = fenced(clients_md(), heading, "json")
    config = json.loads(block)
    entry = config[servers_key]["mcp-gateway"]
    assert set(entry) == fields, entry
    if type_value:
        assert entry["type"] == type_value
    assert DOCS_URL in json.dumps(entry)


# -- the log, and stopping ---------------------------------------------------------------------------


async def test_refused_token_says_what_to_do(dev: Dev) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for path in ("/mcp", "/api/mcp/sessions"):
            response = await http.post(f"http://127.0.0.1:{dev.port}{path}", json={},
                                       headers={"Authorization": "Bearer mcpgw_revoked_or_mistyped"})
            assert response.status_code == 401
            challenge = response.headers["www-authenticate"]
            assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
            assert "resource_metadata=" in challenge
            description = re.search(r'error_description="([^"]*)"', challenge)
            assert description and "mcp-gateway token create" in description.group(1)
            assert "re-register" not in challenge and response.json()["error_description"] == description.group(1)
            assert all(32 <= ord(c) < 127 and c not in '"\\' for c in description.group(1))  # RFC 6750


async def test_ctrl_c_with_a_stream_open_is_clean_and_says_the_database_keeps_running(dev: Dev) -> None:
    code = None
    try:
        async with Client(dev.url, auth=dev.token(), mode="legacy") as client:  # holds a GET stream open
            await client.call_tool("echo", {"text": "hold on"})
            dev.proc.send_signal(signal.SIGINT)
            code = await asyncio.to_thread(dev.proc.wait, 30)
    except Exception:
        if code is None:
            raise
        # closing the session (DELETE) against the stopped server fails: expected
    log = dev.stderr.read_text()
    assert code == 0, log
    for noise in ("\x1b[", "color_message", "%d", "%s", " ERROR ", "Traceback"):
        assert noise not in log, (noise, log)
    assert "db stop" in dev.printed().splitlines()[-1] and "keeps running" in dev.printed()



async def test_a_second_dev_reuses_the_database_and_the_token(dev: Dev) -> None:
    token = dev.token()
    again = start_dev(dev.env, dev.data_dir, "dev2", dev.port)
    try:
        assert again.token() == token
        async with Client(again.url, auth=token) as client:
            usage = (await client.call_tool("my_usage", {})).structured_content
        assert usage["calls"] >= 2  # the calls of the first run
    finally:
        again.proc.terminate()
        again.proc.wait(30)
