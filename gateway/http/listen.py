"""The listening socket, bound before anything else starts.

Binding first means a port clash is found before the database is touched, before crash
recovery runs and before `dev` prints a token for a server that will never answer.
"""

from __future__ import annotations

import errno
import socket

from gateway.errors import UserError

_CHOOSE = "choose another with --port or MCP_GATEWAY_PORT"


def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """Bound, listening TCP sockets for every address `host` resolves to (uvicorn serves them).

    Raises UserError (one line) when the address cannot be had.
    """
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"cannot listen on {host!r}: {exc.strerror} (set --host or MCP_GATEWAY_HOST)") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in addresses:
            if port and address[1] != port:  # after an ephemeral first bind: the others share its port
                address = (address[0], port, *address[2:])
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            # A port in TIME_WAIT after a restart is fine to reuse; a port someone listens on is not
            # (Linux refuses the bind or the listen below even with SO_REUSEADDR).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
                sock.listen(2048)  # claim the port now: a second process's bind then fails, not its listen
            except OSError as exc:
                raise UserError(_explain(exc, host, port)) from None
            port = sock.getsockname()[1]  # --port 0: the kernel's choice, shared by the other addresses
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def bound_port(sockets: list[socket.socket]) -> int:
    return int(sockets[0].getsockname()[1])


def _explain(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use (another mcp-gateway?): {_CHOOSE}"
    if exc.errno == errno.EACCES:
        return f"no permission to listen on port {port} on {host}: {_CHOOSE}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: not an address of this machine (set --host or MCP_GATEWAY_HOST)"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
