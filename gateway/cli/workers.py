"""`serve --workers N`: N worker processes serving one listening socket, under a small supervisor.

The supervisor binds the port (gateway/http/listen.py), migrates, then starts each worker as
`python -m gateway.cli serve ...` with the listening sockets inherited (their descriptor numbers
in MCP_GATEWAY_INHERITED_FDS); the kernel spreads connections over the workers' accept calls.

Each worker is a whole gateway process: its own instance id (`<base>-w<i>`, held by the advisory
lock of gateway/store/instance_lock.py), its own pool (its share of the connection budget, gateway/store/budget.py),
its own tracking writer. A worker that dies is started again under the same id: the new process takes
the lock (PostgreSQL dropped it with the dead one's connection) and closes the sessions its id left open
as `server_crash`. SIGTERM/SIGINT to the supervisor stops every worker gracefully (each drains its
in-flight calls and flushes its records) and exits 0 when they all did.

Workers run in their own process group (a terminal's Ctrl-C reaches only the supervisor, which forwards
one SIGTERM, so a worker never sees two signals and force-quits) and get SIGTERM if the supervisor dies.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

log = logging.getLogger("mcp_gateway.workers")

INHERITED_FDS = "MCP_GATEWAY_INHERITED_FDS"
WORKER_INDEX = "MCP_GATEWAY_WORKER_INDEX"
_PR_SET_PDEATHSIG = 1
RESTART_DELAY = 1.0       # seconds before a dead worker is started again
START_GRACE = 60.0        # a worker exiting 2 (refused to start) this soon after launch stops everything
STOP_TIMEOUT = 30.0       # seconds a worker may take to drain before it is killed


def inherited_listeners() -> list[socket.socket] | None:
    """The listening sockets a supervisor handed to this worker, or None when this is no worker."""
    spec = os.environ.get(INHERITED_FDS)
    if not spec:
        return None
    return [socket.socket(fileno=int(fd)) for fd in spec.split(",") if fd.strip()]


def worker_instance_id(base: str, index: int) -> str:
    return f"{base}-w{index}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: an orphaned worker is stopped by hand


@dataclass
class Worker:
    index: int
    instance_id: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0


@dataclass
class Supervisor:
    """Starts, watches and stops the workers. `run()` returns the exit code."""

    command: Sequence[str]
    sockets: list[socket.socket]
    base_instance_id: str
    count: int
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    workers: list[Worker] = field(default_factory=list)
    _stopping: bool = False

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.workers = [Worker(i, worker_instance_id(self.base_instance_id, i)) for i in range(self.count)]
            for worker in self.workers:
                self._start(worker)
            log.info("supervising %d workers (%s)", self.count, ", ".join(w.instance_id for w in self.workers))
            code = self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _start(self, worker: Worker) -> None:
        fds = [s.fileno() for s in self.sockets]
        env = dict(self.env)
        env.update({INHERITED_FDS: ",".join(map(str, fds)), WORKER_INDEX: str(worker.index),
                    "MCP_GATEWAY_INSTANCE_ID": worker.instance_id})
        worker.proc = subprocess.Popen(list(self.command), env=env, pass_fds=fds, start_new_session=True,
                                       preexec_fn=_die_with_parent)
        worker.started_at = time.monotonic()

    def _on_signal(self, signum: int, frame: object) -> None:
        if not self._stopping:
            log.info("received %s: stopping %d workers", signal.Signals(signum).name, len(self.workers))
        self._stopping = True

    def _watch(self) -> int:
        while not self._stopping:
            for worker in self.workers:
                proc = worker.proc
                if proc is None or proc.poll() is None:
                    continue
                code = proc.returncode
                if code == 2 and time.monotonic() - worker.started_at < START_GRACE and worker.restarts == 0:
                    log.error("worker %s refused to start (exit 2); stopping", worker.instance_id)
                    self._stop_all()
                    return 2
                log.error("worker %s (pid %d) exited with %s; starting it again", worker.instance_id, proc.pid,
                          code)
                time.sleep(RESTART_DELAY)
                worker.restarts += 1
                self._start(worker)
            time.sleep(0.1)  # a supervisor's poll interval, not a test synchronisation
        return self._stop_all()

    def _stop_all(self) -> int:
        running = [w.proc for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for running_proc in running:
            running_proc.send_signal(signal.SIGTERM)
        worst = 0
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in self.workers:
            proc = worker.proc
            if proc is None:
                continue
            try:
                code = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %s did not stop in %.0fs; killing it", worker.instance_id, STOP_TIMEOUT)
                proc.kill()
                code = proc.wait()
            if code != 0:
                log.error("worker %s exited with %s", worker.instance_id, code)
                worst = worst or (code if code > 0 else 1)
        for sock in self.sockets:
            sock.close()
        return worst


def worker_command(argv: Sequence[str]) -> list[str]:
    """The worker's command line: the supervisor's own `serve` arguments; migrations already ran."""
    return [sys.executable, "-m", "gateway.cli", *argv, "--no-migrate"]
