"""The stdio fast path: non-blocking stdin/stdout for the gateway, and ``tools/call`` lines answered past the SDK.

Why it bypasses the SDK: the SDK's ``stdio_server()`` reads and writes the standard streams through
worker threads (one thread hop per line each way), and its server validates every request and result
into pydantic models and back, which together cost hundreds of microseconds per call under load, more
than the whole policy decision. When stdin and stdout are pipes, sockets or ttys, this module serves them
on the event loop instead and hands them to the SDK's ``stdio_server(stdin=..., stdout=...)``; the SDK
still handles the handshake, ``tools/list``, notifications and every request it is given. Once an agent
finished the legacy handshake, :class:`FastCalls` takes plain ``tools/call`` requests (no ``_meta``:
progress tokens and other request metadata stay with the SDK) off the line and runs them through the very
same :meth:`mcpgov.gateway.Gateway.execute` as the SDK path, writing the wire result unchanged; so
decisions, audit events and errors are the same (``tests/mcpgov/test_fast_path.py`` proves it, and
``bench/gateway_latency.py`` measures what it buys). ``MCPGOV_FAST_PATH=0`` turns the interception off.
Like the SDK, fd 0 and fd 1 are diverted (to /dev/null and stderr) while serving, so stray output never
reaches the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import mcp_types as types

from mcpgov.upstream import UpstreamError

if TYPE_CHECKING:
    from mcpgov.gateway import Gateway

log = logging.getLogger("mcpgov.gateway")

MAX_LINE = 256 * 1024 * 1024  # a JSON-RPC line may carry a large file


class PipeLines:
    """``async for line in PipeLines(reader)``: text lines from a non-blocking pipe, for the SDK.

    ``intercept(line) -> bool`` may take a line for itself (the gateway's tools/call fast path); it is
    offered lines only after the legacy handshake completed (``notifications/initialized`` went by).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        intercept: Callable[[bytes], bool] | None = None,
        on_initialized: Callable[[], None] | None = None,
    ) -> None:
        self.reader = reader
        self.intercept = intercept
        self.on_initialized = on_initialized
        self.initialized = False

    def __aiter__(self) -> PipeLines:
        return self

    async def __anext__(self) -> str:
        while True:
            line = await self.reader.readline()
            if not line:
                raise StopAsyncIteration
            if self.initialized:
                if self.intercept is not None and self.intercept(line):
                    continue
            elif b'"notifications/initialized"' in line:
                self.initialized = True
                if self.on_initialized is not None:
                    self.on_initialized()
            return line.decode("utf-8", errors="replace")


class PipeWriter:
    """The two methods ``stdio_server`` uses on its stdout: ``write`` and ``flush``."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    async def write(self, text: str) -> None:
        self.writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        # drain only applies back-pressure when the agent is slow to read; normally it returns at once
        await self.writer.drain()


class FastCalls:
    """``tools/call`` request lines handled before the SDK server sees them (legacy handshake sessions only)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.enabled = False  # set once a legacy-handshake agent is initialized on stdio
        self.wire: asyncio.StreamWriter | None = None
        self._tasks: dict[Any, asyncio.Task[None]] = {}  # by JSON-RPC request id

    def intercept(self, line: bytes) -> bool:
        """Take a ``tools/call`` request line off the SDK's hands; False leaves the line to the SDK.

        A ``notifications/cancelled`` naming one of those calls is taken too: the call is cancelled as the
        SDK cancels its handlers (the upstream is told, the RESULT says so, and no answer is written).
        """
        if not self.enabled:
            return False
        if b'"notifications/cancelled"' in line and self._tasks:
            return self._cancel(line)
        if b'"tools/call"' not in line:
            return False
        try:
            msg = json.loads(line)
        except ValueError:
            return False
        if not isinstance(msg, dict) or msg.get("method") != "tools/call" or "id" not in msg:
            return False
        params = msg.get("params")
        if not isinstance(params, dict) or not isinstance(params.get("name"), str) or "_meta" in params:
            return False  # progress tokens and other request metadata: the SDK handles those
        arguments = params.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            return False
        request_id = msg["id"]
        if not isinstance(request_id, str | int) or request_id in self._tasks:
            return False  # the SDK answers a malformed or duplicate id
        task = asyncio.get_running_loop().create_task(self._call(request_id, params["name"], arguments))
        self._tasks[request_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(request_id, None))
        return True

    def _cancel(self, line: bytes) -> bool:
        try:
            msg = json.loads(line)
        except ValueError:
            return False
        params = msg.get("params") if isinstance(msg, dict) else None
        request_id = params.get("requestId") if isinstance(params, dict) else None
        if msg.get("method") != "notifications/cancelled" or not isinstance(request_id, str | int):
            return False
        task = self._tasks.get(request_id)
        if task is None:
            return False
        log.debug("fast path: tools/call %r cancelled by the agent", request_id)
        task.cancel()
        return True

    async def _call(self, request_id: Any, name: str, arguments: dict[str, Any] | None) -> None:
        gateway = self.gateway
        log.debug("fast path: tools/call %s", name)
        sess = gateway.sessions.get("stdio") or gateway.open_session("stdio")
        try:
            response: dict[str, Any] = {
                "jsonrpc": "2.0",
                "id": request_id,
                "result": await gateway.execute(sess, name, arguments, request_id=request_id),
            }
        except asyncio.CancelledError:
            return  # cancelled by the agent: a cancelled request is never answered
        except UpstreamError as exc:
            response = {"jsonrpc": "2.0", "id": request_id, "error": exc.error}
        except Exception as exc:  # never leave the agent without an answer
            log.exception("tools/call %s failed inside the gateway", name)
            response = {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {"code": types.INTERNAL_ERROR, "message": str(exc)},
            }
        assert self.wire is not None
        self.wire.write(
            json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        )


def _pipe_like(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


def available() -> bool:
    return _pipe_like(0) and _pipe_like(1)


@contextlib.asynccontextmanager
async def pipe_stdio(
    intercept: Callable[[bytes], bool] | None = None, on_initialized: Callable[[], None] | None = None
) -> AsyncIterator[tuple[PipeLines, PipeWriter]]:
    """Private duplicates of fd 0/1 served on the event loop; fd 0/1 point at /dev/null and stderr meanwhile."""
    loop = asyncio.get_running_loop()
    in_fd = os.dup(0)
    out_fd = os.dup(1)
    saved_in, saved_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    reader = asyncio.StreamReader(limit=MAX_LINE)
    rtransport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(in_fd, "rb", buffering=0)
    )
    wtransport, wprotocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(out_fd, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(wtransport, wprotocol, None, loop)
    try:
        yield PipeLines(reader, intercept, on_initialized), PipeWriter(writer)
    finally:
        with contextlib.suppress(Exception):
            await writer.drain()
        rtransport.close()
        wtransport.close()
        os.dup2(saved_in, 0)
        os.dup2(saved_out, 1)
        os.close(saved_in)
        os.close(saved_out)
