"""The HTTP pass-through floor: what streamable HTTP→stdio costs with no governance at all (#12, goal 2).

A minimal raw ASGI app under the gateway's own uvicorn settings (``mcpgov.serve.uvicorn_config``, the
same event loop options) that takes each JSON-RPC POST, parses it (as any relay must, to route the
answer), writes it to one stdio upstream and answers the upstream's response ``application/json``;
notifications and responses are answered ``202``; the agent's GET opens an SSE stream that stays
quiet; DELETE ends the session. No session bookkeeping, auth, policy or audit: the gateway's figure
minus this one is what mcpgov itself adds on HTTP; this one minus direct stdio is the client's
streamable HTTP, uvicorn and the loopback. ``bench/governed_path.py`` measures it interleaved with
the other paths.

    .venv/bin/python bench/http_floor.py --port 8765 -- python -m mcp_server_time
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcpgov.serve import event_loop_options, uvicorn_config


class Floor:
    """One stdio upstream, requests relayed by JSON-RPC id."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.proc: asyncio.subprocess.Process | None = None
        self.waiting: dict[Any, asyncio.Future] = {}
        self.sid = secrets.token_hex(16).encode()

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**24
        )
        asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            fut = self.waiting.pop(msg.get("id"), None) if "method" not in msg else None
            if fut is not None and not fut.done():
                fut.set_result(line.rstrip(b"\n"))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()  # startup
            await send({"type": "lifespan.startup.complete"})
            await receive()  # shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["method"] == "GET":  # the agent's stream for server messages: open, and quiet
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            await send({"type": "http.response.body", "body": b"", "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        if scope["method"] != "POST":
            await self._send(send, 200, b"")
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        msg = json.loads(body)
        assert self.proc is not None and self.proc.stdin is not None
        if "method" not in msg or "id" not in msg:  # a notification or a response: relayed, 202
            self.proc.stdin.write(body + b"\n")
            await self._send(send, 202, b"")
            return
        fut = asyncio.get_running_loop().create_future()
        self.waiting[msg["id"]] = fut
        self.proc.stdin.write(body + b"\n")
        await self._send(send, 200, await fut)

    async def _send(self, send: Any, status: int, payload: bytes) -> None:
        headers = [(b"content-length", str(len(payload)).encode()), (b"mcp-session-id", self.sid)]
        if payload:
            headers.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


async def main(port: int, command: list[str], http: str) -> None:
    import uvicorn

    floor = Floor(command)
    await floor.start()
    config = uvicorn_config(floor, "127.0.0.1", port)
    if http:
        config.http = http  # only to compare HTTP parsers (bench/http_cpu.py --parsers)
    await uvicorn.Server(config).serve()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument(
        "--http", default="", help="uvicorn's HTTP parser (h11, httptools); default: the gateway's"
    )
    ap.add_argument("command", nargs="+")
    a = ap.parse_args()
    anyio.run(main, a.port, a.command, a.http, backend_options=event_loop_options())
