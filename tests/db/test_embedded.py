"""The embedded PostgreSQL launcher, on a private temporary directory.

Kept short: unix socket paths are limited to ~100 bytes, hence mkdtemp(prefix="mcpgw-")
under the system temp dir rather than pytest's long tmp_path.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import gateway.store.embedded as embedded
from gateway.store.embedded import EmbeddedPostgres, EmbeddedPostgresError


@pytest.fixture
def data_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="mcpgw-"))
    try:
        yield directory
    finally:
        if (directory / "pgdata" / "postmaster.pid").exists():
            EmbeddedPostgres(directory).stop()
        shutil.rmtree(directory, ignore_errors=True)


def postmaster_pid(directory: Path) -> int:
    return int((directory / "pgdata" / "postmaster.pid").read_text().splitlines()[0])


def postmasters_for(directory: Path) -> list[int]:
    """Every process running `postgres -D <directory>/pgdata` (the postmaster)."""
    target = str(directory / "pgdata").encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"postgres") and b"-D" in argv and target in argv:
            found.append(int(proc.name))
    return found


def test_start_reuse_stop_restart_keeps_data(data_dir: Path) -> None:
    first = EmbeddedPostgres(data_dir)
    url = first.ensure_running()
    pid = postmaster_pid(data_dir)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('written before the stop')")

    # A second caller (another command) reuses the running server.
    second = EmbeddedPostgres(data_dir)
    assert second.is_running()
    assert second.ensure_running() == url
    assert postmaster_pid(data_dir) == pid
    assert postmasters_for(data_dir) == [pid]

    assert second.stop() is True
    assert not first.is_running()
    assert postmasters_for(data_dir) == []
    assert second.stop() is False  # already stopped: nothing to do

    url = first.ensure_running()
    assert postmaster_pid(data_dir) != pid
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT note FROM kept").fetchall() == [("written before the stop",)]
    assert first.stop() is True


def test_concurrent_first_starts_make_one_server(data_dir: Path) -> None:
    code = ("import sys; from gateway.store.embedded import EmbeddedPostgres;"
            " print(EmbeddedPostgres(sys.argv[1], fast_unsafe=True).ensure_running())")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(data_dir)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    urls = {out.strip() for out, _ in results}
    assert len(urls) == 1
    pid = postmaster_pid(data_dir)
    assert postmasters_for(data_dir) == [pid]
    with psycopg.connect(urls.pop(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'mcp_gateway'").fetchone() == (1,)


def test_missing_binaries_say_what_to_install(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))                   # no pg_ctl, no pg_config
    monkeypatch.setattr(embedded.glob, "glob", lambda pattern: [])  # no /usr/lib/postgresql/*/bin
    with pytest.raises(EmbeddedPostgresError) as info:
        EmbeddedPostgres(data_dir).ensure_running()
    message = str(info.value)
    assert "apt-get install postgresql" in message
    assert "MCP_GATEWAY_DATABASE_URL" in message
    assert "\n" not in message
    assert not (data_dir / "pgdata").exists()


def test_as_root_a_home_directory_keeps_its_permissions() -> None:
    """Root's data dir under a private home (0700): the cluster goes where `postgres` can reach it
    without anything being made searchable, and stays there (DATA_DIR/cluster links to it)."""
    if os.geteuid() != 0:
        pytest.skip("only root hands the cluster to the postgres account; as a user DATA_DIR holds it")
    base = Path(tempfile.mkdtemp(prefix="mcpgw-"))
    os.chmod(base, 0o755)  # stands for / (mkdtemp makes it private)
    home = base / "home"
    home.mkdir(mode=0o700)
    os.chmod(home, 0o700)
    data_dir = home / ".local" / "share" / "mcp-gateway"
    clusters = base / "clusters"
    cluster = EmbeddedPostgres(data_dir, fast_unsafe=True, cluster_root=clusters)
    try:
        url = cluster.ensure_running()
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert stat.S_IMODE(home.stat().st_mode) == 0o700, "the home directory was made searchable"
        assert cluster.home.parent == clusters and (data_dir / "cluster").resolve() == cluster.home
        assert (cluster.home / "pgdata" / "PG_VERSION").exists() and not (data_dir / "pgdata").exists()
        again = EmbeddedPostgres(data_dir, cluster_root=base / "elsewhere")
        assert again.home == cluster.home and again.is_running(), "the link decides, later runs agree"
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
