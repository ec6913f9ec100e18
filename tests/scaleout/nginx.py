"""A real nginx on loopback, round-robin over gateway processes with no stickiness (Debian's nginx).

`ensure_nginx()` installs Debian's package when the binary is missing and the tests run as root with
apt-get (as .ci/run does); otherwise it fails the test with the reason. Nothing is skipped silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")

# The configuration docs/scaling.md shows (same directives), with loopback addresses and test paths.
CONFIG = """\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format upstream_log '$request_method $status $upstream_addr $upstream_status';
    access_log {dir}/access.log upstream_log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    upstream mcp_gateway {{
{servers}
{keepalive}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mcp_gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_read_timeout 1h;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


def ensure_nginx() -> str:
    for candidate in (shutil.which("nginx"), *NGINX_CANDIDATES):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError("nginx is not installed and cannot be installed here (needs root and apt-get): "
                           "install Debian's nginx (apt-get install nginx-light) to run the load-balancer tests")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx-light"], check=False,
                   env=env, capture_output=True, timeout=600)
    if shutil.which("nginx") is None and not os.access(NGINX_CANDIDATES[0], os.X_OK):
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx-light"], check=True,
                       env=env, capture_output=True, timeout=600)
    return shutil.which("nginx") or NGINX_CANDIDATES[0]


@contextmanager
def round_robin(backends: Sequence[int], port: int, workdir: Path, *, keepalive: bool = True) -> Iterator[Path]:
    """nginx on 127.0.0.1:`port` spreading requests over `backends` in turn; yields its access log path.

    keepalive=False: a new upstream connection per request (so one port served by several worker
    processes sees its requests spread by the kernel rather than pinned to one connection's worker).
    """
    binary = ensure_nginx()
    workdir.mkdir(parents=True, exist_ok=True)
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=30s;" for p in backends)
    conf = workdir / "nginx.conf"
    conf.write_text(CONFIG.format(dir=workdir, servers=servers, port=port,
                                  keepalive="        keepalive 32;" if keepalive else ""))
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(workdir), "-e", str(workdir / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                error_log = workdir / "error.log"
                stderr = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"nginx exited {proc.returncode}: {stderr}"
                                   f"{error_log.read_text() if error_log.exists() else ''}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not answer /health in 20 s")
            time.sleep(0.05)
        yield workdir / "access.log"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


TS_CLIENT_DIR = Path(__file__).resolve().parent / "ts"


def ensure_ts_client() -> Path:
    """`npm ci` of the pinned TypeScript SDK (package.json + package-lock.json) once; the client script's dir."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("node and npm are needed for the TypeScript SDK client test (Debian: apt-get install npm)")
    marker = TS_CLIENT_DIR / "node_modules" / ".package-lock.json"
    lock = TS_CLIENT_DIR / "package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TS_CLIENT_DIR, check=True, capture_output=True,
                       timeout=600)
    return TS_CLIENT_DIR
