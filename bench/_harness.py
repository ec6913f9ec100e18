"""What the benchmarks share: a database, processes pinned to a core, a token, wrk, RSS.

Everything here binds to 127.0.0.1 and every process started is stopped in a `finally`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cores() -> int:
    return len(os.sched_getaffinity(0))


# Where the side-by-side benchmarks put things on a 2-core machine: every server alone on core 1, wrk on core 0.
SERVER_CPU, CLIENT_CPU = 1, 0


def pin(cpu: int | None) -> list[str]:
    """`taskset -c N` when there are at least two cores and taskset exists, else nothing."""
    if cpu is None or cores() < 2 or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(cpu)]


@dataclass
class BenchDatabase:
    env: dict[str, str]      # what a gateway process (or the CLI) needs to reach it
    admin_url: str
    data_dir: Path
    embedded: bool
    pgdata: Path | None = None  # the embedded cluster's, for its CPU time (None: a database elsewhere)


@contextmanager
def bench_database() -> Iterator[BenchDatabase]:
    """MCP_GATEWAY_DATABASE_URL when set (a scratch database you own!), else an embedded cluster in a
    temporary directory, stopped and removed at the end."""
    data_dir = Path(tempfile.mkdtemp(prefix="mcpgw-bench-"))
    os.chmod(data_dir, 0o755)
    url = os.environ.get("MCP_GATEWAY_DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    env.update({"MCP_GATEWAY_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO)})
    cluster = None
    try:
        if url:
            env["MCP_GATEWAY_DATABASE_URL"] = url
            admin = url
        else:
            from gateway.store.embedded import EmbeddedPostgres

            cluster = EmbeddedPostgres(data_dir)
            admin = cluster.ensure_running()
        subprocess.run([PY, "-m", "gateway.cli", "migrate"], env=env, check=True, cwd=REPO,
                       stdout=subprocess.DEVNULL)
        yield BenchDatabase(env=env, admin_url=admin, data_dir=data_dir, embedded=cluster is not None,
                            pgdata=cluster.pgdata if cluster is not None else None)
    finally:
        if cluster is not None:
            try:
                cluster.stop()
            except Exception as exc:  # pragma: no cover - report, keep cleaning up
                print(f"warning: could not stop the embedded cluster: {exc}", file=sys.stderr)
        shutil.rmtree(data_dir, ignore_errors=True)


def create_token(db: BenchDatabase, tenant: str = "bench", user: str = "bench") -> str:
    out = subprocess.run([PY, "-m", "gateway.cli", "token", "create", "--tenant", tenant, "--user", user],
                         env=db.env, check=True, cwd=REPO, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


@dataclass
class Proc:
    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode


def start(name: str, cmd: Sequence[str], env: dict[str, str], port: int, log_dir: Path, *,
          cpu: int | None = None, health: str = "/health", timeout: float = 60.0, cwd: Path = REPO,
          wrapper: Sequence[str] = ()) -> Proc:
    """`cmd` as a process; `wrapper` goes in front of it (bench/instructions.py runs servers under valgrind)."""
    log_path = log_dir / f"{name}-{port}.log"
    with open(log_path, "wb") as log_file:
        popen = subprocess.Popen([*pin(cpu), *wrapper, *cmd], env=env, cwd=cwd, stdout=log_file,
                                 stderr=subprocess.STDOUT)
    proc = Proc(name, port, popen, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {popen.returncode}:\n{proc.log_tail()}")
        try:
            httpx.get(proc.url + health, timeout=1)  # any answer means it listens
            return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"{name} did not answer within {timeout}s:\n{proc.log_tail()}")
        time.sleep(0.05)


def start_gateway(db: BenchDatabase, log_dir: Path, *, cpu: int | None = None, port: int | None = None,
                  tools: str = "bench.tools:mcp", ablate: str = "", name: str = "gateway",
                  checkout: Path = REPO, wrapper: Sequence[str] = (), timeout: float = 60.0,
                  extra_env: Mapping[str, str] | None = None) -> Proc:
    """A gateway process; `checkout` runs another working tree's code (`python -m` imports from its cwd).
    Its environment is the database's plus `extra_env` (MCP_GATEWAY_... settings, PYTHONPATH)."""
    port = port or free_port()
    env = dict(db.env)
    env.update({"MCP_GATEWAY_PORT": str(port), "MCP_GATEWAY_HOST": "127.0.0.1",
                "MCP_GATEWAY_INSTANCE_ID": f"bench-{port}", "PYTHONPATH": str(checkout)})
    env.update(extra_env or {})
    entry = ["-m", "bench.ablate_serve"] if ablate else ["-m", "gateway.cli"]
    if ablate:
        env["BENCH_ABLATE"] = ablate
    cmd = [PY, *entry, "serve", "--tools", tools]
    return start(name, cmd, env, port, log_dir, cpu=cpu, cwd=checkout, wrapper=wrapper, timeout=timeout)


def start_bare(log_dir: Path, *, cpu: int | None = None, app: str = "bench.tools:bare_app",
               name: str = "bare", wrapper: Sequence[str] = (), timeout: float = 60.0,
               extra_env: Mapping[str, str] | None = None) -> Proc:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra_env or {})
    # h11, as the gateway always parses (gateway/cli/commands.py): uvicorn takes httptools wherever it is
    # installed, and the comparison would then be between parsers.
    cmd = [PY, "-m", "uvicorn", "--factory", app, "--http", "h11", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning", "--no-access-log", "--no-server-header"]
    return start(name, cmd, env, port, log_dir, cpu=cpu, health="/mcp", wrapper=wrapper, timeout=timeout)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cluster_cpu_seconds(db: BenchDatabase) -> float | None:
    """User + system CPU time the embedded PostgreSQL cluster has used so far: the postmaster, its live
    processes (backends, WAL writer, checkpointer...) and the ones that have exited (counted in the
    postmaster's children's times). None when the database runs elsewhere and cannot be measured here."""
    if db.pgdata is None:
        return None
    postmaster = int((db.pgdata / "postmaster.pid").read_text().split()[0])
    hz = os.sysconf("SC_CLK_TCK")
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(entry.name) == postmaster:
            ticks += sum(int(f) for f in fields[11:15])  # its own time and its exited children's
        elif int(fields[1]) == postmaster:  # ppid
            ticks += int(fields[11]) + int(fields[12])
    return ticks / hz


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# -- wrk -------------------------------------------------------------------------------------

WRK_LUA = r"""
-- POST tools/call echo, in one of two protocol eras; counts any answer that is not a successful call.
local token = os.getenv("BENCH_TOKEN") or ""
local era = os.getenv("BENCH_ERA") or "handshake"
local tool = os.getenv("BENCH_TOOL") or "echo"
local sessions = {}
for s in string.gmatch(os.getenv("BENCH_SESSIONS") or "", "[^,]+") do table.insert(sessions, s) end
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
  n = 0
end

local base = {["Content-Type"] = "application/json", ["Accept"] = "application/json, text/event-stream"}
if token ~= "" then base["Authorization"] = "Bearer " .. token end

local modern_meta = '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",' ..
  '"io.modelcontextprotocol/clientInfo":{"name":"bench-wrk","version":"1.0"},' ..
  '"io.modelcontextprotocol/clientCapabilities":{}}'

function request()
  n = n + 1
  local id = tid * 1000000000 + n
  local h = {}
  for k, v in pairs(base) do h[k] = v end
  local body
  if era == "handshake" then
    h["Mcp-Session-Id"] = sessions[(n % #sessions) + 1]
    h["MCP-Protocol-Version"] = "2025-11-25"
    body = '{"jsonrpc":"2.0","id":' .. id .. ',"method":"tools/call","params":{"name":"' .. tool .. '",' ..
      '"arguments":{"text":"hello"}}}'
  else
    h["MCP-Protocol-Version"] = "2026-07-28"
    h["Mcp-Method"] = "tools/call"
    h["Mcp-Name"] = tool
    body = '{"jsonrpc":"2.0","id":' .. id .. ',"method":"tools/call","params":{"name":"' .. tool .. '",' ..
      '"arguments":{"text":"hello"},' .. modern_meta .. '}}'
  end
  return wrk.format("POST", "/mcp", h, body)
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"isError":false', 1, true) then
    bad = bad + 1
    if bad <= 3 then io.stderr:write("bad response " .. status .. ": " .. string.sub(body or "", 1, 300) .. "\n") end
  end
end

function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + (t:get("bad") or 0) end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,' ..
    '"bad":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, b, e.connect, e.read, e.write, e.timeout, e.status))
end
"""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    failed: int  # bad answers + socket errors

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(url: str, *, era: str, connections: int, seconds: float, token: str = "",
            sessions: Sequence[str] = (), cpu: int | None = None, threads: int = 1, script_dir: Path,
            tool: str = "echo") -> WrkResult:
    script = script_dir / "mcp_call.lua"
    if not script.exists():
        script.write_text(WRK_LUA)
    env = dict(os.environ, BENCH_TOKEN=token, BENCH_ERA=era, BENCH_SESSIONS=",".join(sessions), BENCH_TOOL=tool)
    cmd = [*pin(cpu), "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
           "--timeout", "10s", "-s", str(script), url + "/mcp"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    data = json.loads(line[6:])
    failed = data["bad"] + data["connect"] + data["read"] + data["write"] + data["timeout"]
    if failed and out.stderr:
        print(out.stderr.strip()[:1000], file=sys.stderr)
    return WrkResult(requests=data["requests"], seconds=data["duration_us"] / 1e6, p50_ms=data["p50_us"] / 1e3,
                     p90_ms=data["p90_us"] / 1e3, p99_ms=data["p99_us"] / 1e3, failed=failed)


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (Debian/Ubuntu: apt-get install -y wrk)")


def initialize_sessions(url: str, count: int, token: str = "", client_name: str = "bench-wrk",
                        keep_client: httpx.Client | None = None) -> list[str]:
    """Handshake-era sessions opened with raw initialize + notifications/initialized."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    client = keep_client or httpx.Client(timeout=30)
    ids = []
    try:
        for _ in range(count):
            init = client.post(url + "/mcp", headers=headers, json={
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": client_name, "version": "1.0"}}})
            init.raise_for_status()
            sid = init.headers["mcp-session-id"]
            note = client.post(url + "/mcp", headers=headers | {"Mcp-Session-Id": sid,
                                                                "MCP-Protocol-Version": "2025-11-25"},
                               json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            note.raise_for_status()
            ids.append(sid)
    finally:
        if keep_client is None:
            client.close()
    return ids


def settle(gateway: Proc) -> None:
    """Wait until the writer has stored what the last run queued, so it does not bill the next one."""
    def empty() -> bool:
        try:
            return bool(httpx.get(gateway.url + "/ready", timeout=5).json()["writer"]["backlog"] == 0)
        except (httpx.HTTPError, KeyError, ValueError):
            return False

    wait_for(empty, 60, f"{gateway.name}'s tracking backlog to drain", interval=0.1)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def call_echo(http: httpx.Client, url: str, token: str, session_id: str | None, n: int,
              era: str = "handshake") -> None:
    """One `echo` call as wrk sends it (WRK_LUA): on an open session in the handshake era, self-contained in
    2026-07-28 (session_id unused); no Authorization header without a token. Raises unless it succeeded."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    params: dict[str, object] = {"name": "echo", "arguments": {"text": "hello"}}
    if era == "handshake":
        headers |= {"MCP-Protocol-Version": "2025-11-25", "Mcp-Session-Id": session_id or ""}
    else:
        headers |= {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
        params["_meta"] = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                           "io.modelcontextprotocol/clientInfo": {"name": "bench-wrk", "version": "1.0"},
                           "io.modelcontextprotocol/clientCapabilities": {}}
    response = http.post(url + "/mcp", headers=headers,
                         json={"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": params})
    if response.status_code != 200 or '"isError":false' not in response.text:
        raise RuntimeError(f"call failed: HTTP {response.status_code} {response.text[:300]}")
