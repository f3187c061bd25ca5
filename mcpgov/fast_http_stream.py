"""The HTTP fast path for calls to servers that may ask the agent something mid-call.

Why it exists: with the default policy (form elicitation allowed) every HTTP ``tools/call`` used to take
the SDK path, because the upstream's sampling, elicitation or roots request travels on the call's SSE
stream, which only the SDK opened — and that path costs several milliseconds per call more than the
plain fast path (``bench/governed_path.py`` measures both). Here the fast path holds its response
headers until one of two things happens: the call's result arrives (answered ``application/json``, as
:mod:`mcpgov.fast_http` answers), or the first message for the agent does (the upstream's request,
screened by the very same :meth:`mcpgov.surface.Surface.screen_server_request` and put by the same
:meth:`~mcpgov.surface.Surface.ask_agent`, or a log message or progress of the call) — then the answer
becomes ``text/event-stream``: that message as an SSE event, any later ones, the result, and the end.

The agent's connection is a :class:`CallStream` standing where the SDK's ``ServerSession`` stands on the
SDK path (the ``peer`` of the call's :class:`~mcpgov.upstream.Caller`), so the decision, the audit and
the refusals are those of the SDK path by construction. A request put to the agent carries a
gateway-reserved id (``mcpgov-sse-`` and 128 random bits); the agent POSTs its answer to the same
endpoint, where :class:`mcpgov.fast_http.FastHttpCalls` applies the SDK's checks (transport security,
Accept / Content-Type, bearer auth, the session's owner) and hands the answer here. Only an answer to an
id pending *on that transport session* is taken; anything else (another session, an id never sent, a
replay of an answer already taken) goes to the SDK untouched, which answers it as it answers any stray
response (``202``, then dropped), so it never reaches the upstream. When the agent's connection drops
mid-stream, the pending requests are answered to the upstream as failed (``Connection closed``) and the
call is cancelled (the upstream is told; its RESULT says so), so nothing waits for an agent that left.
``tests/mcpgov/test_fast_http_stream.py`` runs the same conversations with ``MCPGOV_FAST_PATH=1`` and
``=0`` and compares what the agent sees and what the audit records.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
import pydantic_core
from mcp.server.streamable_http import CONTENT_TYPE_JSON, CONTENT_TYPE_SSE, MCP_SESSION_ID_HEADER
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp.shared.exceptions import MCPError
from mcp_types import methods as _methods
from sse_starlette.event import ServerSentEvent

from mcpgov.upstream import CALLER, Caller

if TYPE_CHECKING:
    from mcpgov.control import AgentSession
    from mcpgov.fast_http import FastHttpCalls

log = logging.getLogger("mcpgov.gateway")

ANSWER_ID_PREFIX = "mcpgov-sse-"
_PREFIX = ANSWER_ID_PREFIX.encode()
_RESPONSE_KEYS = frozenset({"jsonrpc", "id", "result", "error"})
PING_SECONDS = 15.0  # a keep-alive comment while the agent thinks, as the SDK's SSE responses send
_WRITE_SECONDS = 5.0  # a courtesy cancel to an agent that stopped reading is given up after this


def parse_body(body: bytes) -> Any:
    """A POST body parsed by the SDK's own parser (``pydantic_core.from_json``, as its transport does).

    Whatever reads a body before the SDK does (the header guard, the fast paths) must read the message
    the SDK would: ``json.loads`` also takes a UTF-8 BOM, UTF-16/32 and lone surrogates, bodies the
    SDK refuses with 400 (a parse error). Raises ``ValueError`` where the SDK's parser does.
    """
    return pydantic_core.from_json(body)


def agent_answer(body: bytes) -> dict[str, Any] | None:
    """The JSON-RPC message when ``body`` is one response to a gateway-reserved request id."""
    if _PREFIX not in body or len(body) > DEFAULT_MAX_REQUEST_BODY_SIZE:
        return None
    try:
        msg = parse_body(body)
    except ValueError:
        return None
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0" or not _RESPONSE_KEYS.issuperset(msg):
        return None
    rid = msg.get("id")
    if not isinstance(rid, str) or not rid.startswith(ANSWER_ID_PREFIX):
        return None
    if ("result" in msg) == ("error" in msg):
        return None
    if "result" in msg:
        return msg if isinstance(msg["result"], dict) else None
    error = msg["error"]
    ok = isinstance(error, dict) and type(error.get("code")) is int and isinstance(error.get("message"), str)
    return msg if ok else None


@dataclass(slots=True)
class _Pending:
    """A request put to the agent on one transport session, waiting for the agent's answer."""

    sid: str
    stream: CallStream
    answered: anyio.Event = field(default_factory=anyio.Event)
    answer: dict[str, Any] | None = None


class StreamingCalls:
    """The calls that may turn into an SSE stream, and the requests they put to agents (by reserved id)."""

    def __init__(self, fast: FastHttpCalls) -> None:
        self.fast = fast
        self.gateway = fast.gateway
        self.pending: dict[str, _Pending] = {}

    def connection(self, sid: str) -> Any:
        """The SDK session object of the agent's connection (what it declared at ``initialize``), or None."""
        return self.gateway.surface.connections.get(sid)

    async def deliver(self, sid: str, msg: dict[str, Any], send: Any) -> bool:
        """Hand an agent's answer to the request waiting for it; False: not this session's, the SDK's."""
        pending = self.pending.get(msg["id"])
        if pending is None or pending.sid != sid or pending.answered.is_set():
            return False
        del self.pending[msg["id"]]  # each id is answered once: a replay goes to the SDK, which drops it
        pending.answer = msg
        pending.answered.set()
        # what the SDK answers a POSTed response: 202, no body
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [
                    (b"content-type", CONTENT_TYPE_JSON.encode()),
                    (b"content-length", b"0"),
                    (MCP_SESSION_ID_HEADER.encode(), sid.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
        return True

    async def call(self, sess: AgentSession, msg: dict[str, Any], sid: str, send: Any, receive: Any) -> None:
        """One plain ``tools/call`` whose server may ask the agent: JSON if it does not, SSE if it does."""
        name = msg["params"]["name"]
        stream = CallStream(self, sid, msg["id"], send, receive, self.connection(sid), name)
        token = CALLER.set(Caller(sess, stream, msg["id"], None))
        try:
            with stream.scope:
                response = await self.fast._call(sess, msg, sid)
        finally:
            CALLER.reset(token)
        # A request written to this stream may belong to another call of the same session still in
        # flight (a 2025-11-25 server request names no call: it goes to the newest): it stays pending,
        # answered by the agent's POST as on the SDK path, after this call's end.
        if stream.scope.cancelled_caught:
            log.warning("the agent's connection closed during tools/call %s: call cancelled", name)
            return
        await stream.finish(response)


class CallStream:
    """The agent's connection for one call, as :class:`mcpgov.surface.Surface` uses an SDK ``ServerSession``.

    Capabilities come from the SDK's own session object of that connection (what the agent declared at
    ``initialize``); requests and notifications go onto this call's response, opened as an SSE stream
    by the first of them.
    """

    def __init__(
        self,
        calls: StreamingCalls,
        sid: str,
        request_id: Any,
        send: Any,
        receive: Any,
        connection: Any,
        name: str,
    ) -> None:
        self.calls = calls
        self.name = name
        self.sid = sid
        self.request_id = request_id
        self._send = send
        self._receive = receive
        self.connection = connection
        self.scope = anyio.CancelScope()
        self.started = False  # the SSE headers are out
        self.closed = False  # the agent's connection is gone (or the response ended)
        self.finished = False
        self._lock = anyio.Lock()

    # what Surface asks of a peer

    def check_client_capability(self, capability: types.ClientCapabilities) -> bool:
        return bool(self.connection.check_client_capability(capability))

    @property
    def protocol_version(self) -> str:
        return self.connection.protocol_version

    async def send_notification(self, notification: Any, related_request_id: Any = None) -> None:
        data = notification.model_dump(by_alias=True, mode="json", exclude_none=True)
        await self._event({"jsonrpc": "2.0", **data})

    async def send_request(
        self,
        request: Any,
        result_type: Any,
        request_read_timeout_seconds: float | None = None,
        metadata: Any = None,
        progress_callback: Any = None,
    ) -> Any:
        """Put a request to the agent on this call's stream and wait for its POSTed answer (as the SDK does)."""
        data = request.model_dump(by_alias=True, mode="json", exclude_none=True)
        method = data["method"]
        if self.closed:
            raise MCPError(types.CONNECTION_CLOSED, "Connection closed")
        rid = ANSWER_ID_PREFIX + secrets.token_hex(16)
        pending = _Pending(self.sid, self)
        self.calls.pending[rid] = pending
        wire: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if data.get("params"):
            wire["params"] = data["params"]
        try:
            await self._event(wire)
            try:
                with anyio.fail_after(request_read_timeout_seconds):
                    await pending.answered.wait()
            except TimeoutError:
                await self._courtesy_cancel(rid, f"timed out after {request_read_timeout_seconds}s")
                raise MCPError(types.REQUEST_TIMEOUT, f"Request {method!r} timed out") from None
            except anyio.get_cancelled_exc_class():
                await self._courtesy_cancel(rid, "caller cancelled")  # the upstream withdrew its request
                raise
        finally:
            self.calls.pending.pop(rid, None)
        answer = pending.answer
        if answer is None:  # the agent's connection closed while it was asked
            raise MCPError(types.CONNECTION_CLOSED, "Connection closed")
        if "error" in answer:
            error = answer["error"]
            raise MCPError(error["code"], error["message"], error.get("data"))
        result = answer["result"]
        with contextlib.suppress(KeyError):
            _methods.validate_client_result(method, self.protocol_version, result)
        return result_type.model_validate(result, by_name=False)

    # the response

    async def _start(self) -> None:
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPE_SSE.encode()),
                    (b"cache-control", b"no-cache, no-transform"),
                    (b"connection", b"keep-alive"),
                    (b"x-accel-buffering", b"no"),
                    (MCP_SESSION_ID_HEADER.encode(), self.sid.encode()),
                ],
            }
        )
        self.started = True
        log.debug("HTTP fast path: streaming tools/call %s (a message for the agent)", self.name)
        gw_tg = self.calls.gateway.tg
        if gw_tg is not None:
            gw_tg.start_soon(self._watch)

    async def _write(self, chunk: bytes, *, more: bool = True) -> None:
        try:
            await self._send({"type": "http.response.body", "body": chunk, "more_body": more})
        except Exception as exc:  # the agent's connection is gone
            log.info("the agent's stream closed: %s", exc)
            self._lost()
            raise MCPError(types.CONNECTION_CLOSED, "Connection closed") from exc

    async def _event(self, message: dict[str, Any]) -> None:
        if self.closed:
            raise MCPError(types.CONNECTION_CLOSED, "Connection closed")
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        async with self._lock:
            if not self.started:
                await self._start()
            await self._write(ServerSentEvent(data=data, event="message").encode())

    async def _courtesy_cancel(self, rid: str, reason: str) -> None:
        note = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": rid, "reason": reason},
        }
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(_WRITE_SECONDS),
            contextlib.suppress(Exception),
        ):
            await self._event(note)

    async def finish(self, response: dict[str, Any]) -> None:
        """The call's answer: the whole JSON response if nothing was streamed, else its last event."""
        async with self._lock:
            self.finished = True
            if self.closed:
                return
            if not self.started:
                await self.calls.fast._answer(self._send, self.sid, response)
            else:
                data = json.dumps(response, ensure_ascii=False, separators=(",", ":"))
                with contextlib.suppress(MCPError):
                    await self._write(ServerSentEvent(data=data, event="message").encode(), more=False)
            self.closed = True

    async def _watch(self) -> None:
        """While the stream is open: keep-alive comments, and the agent's disconnect noticed at once."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._ping)
            with contextlib.suppress(Exception):
                while (await self._receive())["type"] != "http.disconnect":
                    pass
            tg.cancel_scope.cancel()
        if not self.finished:
            self._lost()

    async def _ping(self) -> None:
        while not self.closed:
            await anyio.sleep(PING_SECONDS)
            async with self._lock:
                if self.closed:
                    return
                with contextlib.suppress(MCPError):
                    await self._write(ServerSentEvent(comment=f"ping - {datetime.now(UTC)}").encode())

    def _lost(self) -> None:
        """The agent went away mid-stream: its pending requests fail (to the upstream), the call is cancelled."""
        if self.closed:
            return
        self.closed = True
        self.fail_pending()
        self.scope.cancel()

    def fail_pending(self) -> None:
        for rid, pending in list(self.calls.pending.items()):
            if pending.stream is self and not pending.answered.is_set():
                del self.calls.pending[rid]
                pending.answered.set()  # no answer: Connection closed
