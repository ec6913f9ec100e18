"""Embedded PostgreSQL: a private cluster in MCP_GATEWAY_DATA_DIR, started on demand.

The cluster listens only on a unix socket inside the data directory (mode 0700),
so local trust authentication reaches nobody but the owner of that directory.
initdb and pg_ctl refuse to run as root: when we are root, the server runs as an
unprivileged system account (`postgres` by default) that owns the cluster files.
Start and stop hold an exclusive file lock, so two commands started at once
cannot double-start or corrupt the cluster.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

DATABASE_NAME = "mcp_gateway"
SUPERUSER = "postgres"
PORT = 5432  # only names the socket file; there is no TCP listener
# As root, where a cluster goes when the service account cannot reach MCP_GATEWAY_DATA_DIR
# (e.g. under /root, mode 0700): we do not loosen a home directory's permissions.
CLUSTER_ROOT = Path("/var/lib/mcp-gateway")


class EmbeddedPostgresError(RuntimeError):
    """A one-line, actionable reason the embedded cluster cannot be used."""


def find_bindir() -> Path:
    """Where initdb/pg_ctl/postgres live: PATH, then pg_config --bindir, then Debian's layout."""
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass

    def version_key(path: str) -> tuple[int, ...]:
        parts = Path(path).parent.name.split(".")
        return tuple(int(p) for p in parts if p.isdigit())

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True)]
    for directory in candidates:
        if all((directory / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise EmbeddedPostgresError(
        "no PostgreSQL server binaries found (initdb, pg_ctl): install them "
        "(Debian/Ubuntu: apt-get install postgresql) or set MCP_GATEWAY_DATABASE_URL"
    )


@dataclass(frozen=True)
class _Account:
    """The OS account the server runs as (None: ourselves)."""

    uid: int | None
    gid: int | None

    @classmethod
    def for_current_user(cls, name: str) -> _Account:
        if os.geteuid() != 0:
            return cls(None, None)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise EmbeddedPostgresError(
                f"running as root needs an unprivileged system account '{name}' to run PostgreSQL "
                "(create it, e.g. `useradd --system postgres`, or run as an ordinary user)"
            ) from None
        return cls(entry.pw_uid, entry.pw_gid)

    def chown(self, path: Path) -> None:
        if self.uid is not None:
            os.chown(path, self.uid, self.gid or -1)

    def run_kwargs(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


class EmbeddedPostgres:
    """A cluster at `<data_dir>/pgdata`, socket in `<data_dir>/run`, log at `<data_dir>/postgres.log`."""

    def __init__(self, data_dir: str | os.PathLike[str], *, fast_unsafe: bool = False,
                 service_account: str = "postgres", cluster_root: str | os.PathLike[str] = CLUSTER_ROOT) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.home = self._cluster_home(Path(cluster_root))
        self.pgdata = self.home / "pgdata"
        self.socket_dir = self.home / "run"
        self.log_file = self.home / "postgres.log"
        self._fast_unsafe = fast_unsafe  # tests: fsync off; never for data you keep
        self._service_account = service_account

    def _cluster_home(self, cluster_root: Path) -> Path:
        """Where pgdata/, run/ and postgres.log live: DATA_DIR, unless we are root and the service
        account could only reach DATA_DIR by our making its parents (a home directory) searchable.
        Then a directory of its own under CLUSTER_ROOT, named by DATA_DIR and linked from
        DATA_DIR/cluster, so the choice sticks whatever happens to the parents' modes later."""
        link = self.data_dir / "cluster"
        if link.is_symlink():
            return Path(os.readlink(link))
        if os.geteuid() != 0 or (self.data_dir / "pgdata").exists() or _searchable_by_all(self.data_dir.parent):
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return cluster_root / f"{self.data_dir.name.strip('.') or 'cluster'}-{digest}"

    @property
    def runs_as(self) -> str | None:
        """The OS account the server runs as when that is not us (we are root)."""
        return self._service_account if os.geteuid() == 0 else None

    # -- public ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Superuser URL over the unix socket (admin: migrations, tests)."""
        return self.url_for(SUPERUSER)

    def url_for(self, user: str, database: str = DATABASE_NAME) -> str:
        return f"postgresql://{quote(user)}@/{quote(database)}?host={quote(str(self.socket_dir))}&port={PORT}"

    def is_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        result = self._pg_ctl("status", check=False)
        return result.returncode == 0

    def ensure_running(self, timeout: float = 60.0) -> str:
        """Create the cluster on first use, start it if stopped; return the admin URL."""
        with self._lock():
            bindir = find_bindir()
            account = _Account.for_current_user(self._service_account)
            if not (self.pgdata / "PG_VERSION").exists():
                self._init(bindir, account)
            if self._pg_ctl("status", check=False, bindir=bindir).returncode != 0:
                self._start(bindir, account, timeout)
            self._ensure_database(bindir, account)
        return self.url

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop the server if it runs (fast mode: open sessions are ended). True if it was running."""
        with self._lock():
            if not (self.pgdata / "PG_VERSION").exists():
                return False
            if self._pg_ctl("status", check=False).returncode != 0:
                return False
            self._pg_ctl("stop", "-m", "fast", "-w", "-t", str(int(timeout)))
            return True

    # -- internals --------------------------------------------------------------------

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / ".launcher.lock", "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _init(self, bindir: Path, account: _Account) -> None:
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise EmbeddedPostgresError(
                f"{self.pgdata} exists but holds no PostgreSQL cluster; move it away or choose another "
                "MCP_GATEWAY_DATA_DIR"
            )
        if self.home == self.data_dir:
            self._grant_traverse(account)
        else:
            self._make_home(account)
        for directory in (self.pgdata, self.socket_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
            account.chown(directory)
        self.log_file.touch(mode=0o600, exist_ok=True)
        account.chown(self.log_file)
        result = subprocess.run(
            [str(bindir / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER, "--auth=trust",
             "--encoding=UTF8", "--locale=C.UTF-8" if _has_c_utf8() else "--locale=C"],
            capture_output=True, text=True, cwd=str(self.pgdata), **account.run_kwargs(),
        )
        if result.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise EmbeddedPostgresError(f"initdb failed: {_last_line(result.stderr or result.stdout)}")
        settings = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "unix_socket_permissions": "0700",
            "port": str(PORT),
            "max_connections": "300",
            "shared_buffers": "128MB",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
        }
        if self._fast_unsafe:
            settings.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write("\n# mcp-gateway embedded cluster\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        # Only local (socket) connections exist; the socket directory is private.
        (self.pgdata / "pg_hba.conf").write_text("local all all trust\n")

    def _make_home(self, account: _Account) -> None:
        """A cluster home outside DATA_DIR: the service account's own, linked from DATA_DIR/cluster."""
        self.home.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if not _searchable_by_all(self.home.parent):
            raise EmbeddedPostgresError(
                f"{self.home.parent} is not reachable by the account PostgreSQL runs as ({self._service_account}); "
                "make it searchable (chmod o+x) or set MCP_GATEWAY_DATA_DIR to a directory outside a private home")
        self.home.mkdir(mode=0o700, exist_ok=True)
        account.chown(self.home)
        link = self.data_dir / "cluster"
        if not link.is_symlink():
            link.symlink_to(self.home)

    def _grant_traverse(self, account: _Account) -> None:
        """The service account must reach the data directory through its parents (e.g. /root)."""
        if account.uid is None:
            return
        for parent in reversed(self.data_dir.parents):
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)  # search only: names cannot be listed
        account.chown(self.data_dir)
        os.chmod(self.data_dir, 0o700 if account.uid is None else 0o711)

    def _start(self, bindir: Path, account: _Account, timeout: float) -> None:
        # A stale pid file from a killed server is handled by postgres itself.
        result = subprocess.run(
            [str(bindir / "pg_ctl"), "start", "-D", str(self.pgdata), "-l", str(self.log_file),
             "-w", "-t", str(int(timeout))],
            capture_output=True, text=True, cwd=str(self.pgdata), start_new_session=True,
            stdin=subprocess.DEVNULL, **account.run_kwargs(),
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"PostgreSQL did not start (see {self.log_file}): {_last_line(self._log_tail() or result.stderr)}"
            )

    def _ensure_database(self, bindir: Path, account: _Account) -> None:
        deadline = time.monotonic() + 30
        psql = [str(bindir / "psql") if (bindir / "psql").exists() else "psql",
                "-X", "-q", "-t", "-A", "-h", str(self.socket_dir), "-p", str(PORT), "-U", SUPERUSER, "-d", "postgres"]
        while True:
            check = subprocess.run([*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'"],
                                   capture_output=True, text=True)
            if check.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"cannot connect to the embedded cluster: {_last_line(check.stderr)}")
            time.sleep(0.2)  # the server accepts connections moments after pg_ctl returns
        if check.stdout.strip() != "1":
            create = subprocess.run([*psql, "-c", f'CREATE DATABASE "{DATABASE_NAME}"'], capture_output=True, text=True)
            if create.returncode != 0 and "already exists" not in create.stderr:
                raise EmbeddedPostgresError(f"cannot create database {DATABASE_NAME}: {_last_line(create.stderr)}")

    def _pg_ctl(self, *args: str, check: bool = True, bindir: Path | None = None) -> subprocess.CompletedProcess[str]:
        bindir = bindir or find_bindir()
        account = _Account.for_current_user(self._service_account)
        result = subprocess.run(
            [str(bindir / "pg_ctl"), *args, "-D", str(self.pgdata)],
            capture_output=True, text=True, cwd=str(self.pgdata), stdin=subprocess.DEVNULL,
            **account.run_kwargs(),
        )
        if check and result.returncode != 0:
            raise EmbeddedPostgresError(f"pg_ctl {args[0]} failed: {_last_line(result.stderr or result.stdout)}")
        return result

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


def _searchable_by_all(directory: Path) -> bool:
    """Every existing directory from / down to `directory` lets any account pass through (o+x).
    Missing ones are created later with the usual 0755."""
    for path in (*reversed(directory.parents), directory):
        try:
            if not path.stat().st_mode & 0o001:
                return False
        except FileNotFoundError:
            return True
    return True


def _has_c_utf8() -> bool:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True, timeout=5).stdout.lower()
    except (OSError, subprocess.SubprocessError):
        return False
    return "c.utf8" in out or "c.utf-8" in out


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
