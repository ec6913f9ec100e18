"""Client CPU per direct upstream POST: `RawPost` (h11 over asyncio streams) against httpx, in-process.

    python bench/raw_post.py [--requests 3000] [--rounds 5]

A canned keep-alive HTTP/1.1 server (one JSON answer, as a FastMCP upstream sends it) runs in a subprocess;
this process posts `tools/call`-sized requests one after another and reports its own CPU per request (best
of the rounds), so only the client's work is counted: building the request, h11, the socket, the answer.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx2

from bench._harness import PY, free_port, wait_for
from gateway.credentials.clients import UserBearer
from gateway.mcp.upstream_http import RawPost

SERVER = textwrap.dedent("""
    import asyncio, sys
    BODY = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello"}],"isError":false}}'
    ANSWER = (b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ndate: Tue, 01 Dec 2026 04:00:00 GMT\\r\\n"
              b"server: uvicorn\\r\\nmcp-session-id: abc\\r\\ncontent-length: %d\\r\\n\\r\\n%s" % (len(BODY), BODY))
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\\r\\n\\r\\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\\r\\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                writer.write(ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()
    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
        await server.serve_forever()
    asyncio.run(main())
""")
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json",
           "mcp-protocol-version": "2025-11-25", "mcp-session-id": "abc"}
BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}'


async def cpu_per_request(post: Callable[[], Awaitable[bytes]], requests: int, rounds: int) -> float:
    for _ in range(min(requests, 500)):  # warm up: connection open, caches filled
        await post()
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(requests):
            await post()
        best = min(best, (time.process_time() - start) / requests)
    return best


async def run(url: str, requests: int, rounds: int) -> None:
    async with httpx2.AsyncClient(headers={"X-Team": "bench"}) as client:
        raw = RawPost(url, client, UserBearer("bench-token"))

        async def raw_post() -> bytes:
            response = await raw.post(HEADERS, BODY)
            try:
                return await response.read()
            finally:
                raw.release(response)

        async def httpx_post() -> bytes:
            answer = await client.post(url, content=BODY, headers=HEADERS | {"authorization": "Bearer bench-token"})
            return answer.content

        for name, post in (("RawPost (h11)", raw_post), ("httpx", httpx_post)):
            cpu = await cpu_per_request(post, requests, rounds)
            print(f"{name:15} {cpu * 1e6:8.1f} µs CPU per request", flush=True)
        raw.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([PY, "-c", SERVER, str(port)])
    try:
        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(listening, 10, "the canned server")
        asyncio.run(run(f"http://127.0.0.1:{port}/mcp", args.requests, args.rounds))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
