"""Connections to upstream MCP servers.

Every upstream is an SDK ``ClientSession`` (handshake, ``tools/list``, server-to-client requests and
notifications). For stdio upstreams the gateway owns the pipe transport, which also carries a raw side
channel used only by the hot path: ``tools/call`` is written as one JSON line with a gateway-reserved
string id and its response is handed back as a plain dict, without building pydantic models twice per
hop. Responses with any other id go to the SDK session as usual. HTTP upstreams use the SDK client.

Why the raw channel bypasses the SDK: a ``tools/call`` through ``ClientSession`` builds a request model,
validates the response into a ``CallToolResult`` and the gateway dumps it back to a dict, per call; that
costs more than the policy decision. The raw channel relays the JSON as it is, and nothing else: the
handshake, ``tools/list``, notifications, server-to-client requests and HTTP upstreams stay with the SDK.
``tests/mcpgov/test_fast_path.py`` proves it answers like the SDK session (same results under the SDK's
model, same errors); ``bench/gateway_latency.py`` measures it. See ``docs/gateway.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio
import mcp_types as types
from anyio.abc import TaskStatus
from mcp import Client, ClientSession
from mcp.client.extension import ClientExtension, NotificationBinding
from mcp.client.stdio import get_default_environment
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import TypeAdapter

from mcpgov.config import UpstreamConfig
from mcpgov.retry import Backoff

log = logging.getLogger("mcpgov.upstream")

RAW_ID_PREFIX = "mcpgov-"
# a tools/call answer: its result, or (2026-07-28) a request for the agent's input first
CALL_RESULT: TypeAdapter[types.CallToolResult | types.InputRequiredResult] = TypeAdapter(
    types.CallToolResult | types.InputRequiredResult
)
MAX_LINE = 256 * 1024 * 1024
TASKS_EXTENSION = "io.modelcontextprotocol/tasks"  # 2026-07-28 tasks (SEP-2663), declared to upstreams
WIRE_DICT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


class _AnyParams(types.NotificationParams):
    model_config = {**types.NotificationParams.model_config, "extra": "allow"}


class GatewayTasks(ClientExtension):
    """What the gateway declares to an HTTP upstream's SDK client: the tasks extension, and a binding for the
    2025-11-25 ``notifications/tasks/status`` (not in the SDK's tables), handed to the gateway's tasks."""

    identifier = TASKS_EXTENSION

    def __init__(self, on_status: Callable[[dict[str, Any]], None]) -> None:
        self.on_status = on_status

    def notifications(self) -> list[NotificationBinding[Any]]:
        async def deliver(params: types.NotificationParams) -> None:
            fields = params.model_dump(by_alias=True, mode="json", exclude_none=True)
            self.on_status({"jsonrpc": "2.0", "method": "notifications/tasks/status", "params": fields})

        return [
            NotificationBinding(method="notifications/tasks/status", params_type=_AnyParams, handler=deliver)
        ]


class TaskRequest(types.Request[dict[str, Any], str]):
    """``tasks/get``, ``tasks/update``, ``tasks/cancel`` of the 2026-07-28 extension (not in the SDK's tables).

    ``name_param``: the extension routes these by ``Mcp-Name: <taskId>`` over streamable HTTP.
    """

    name_param: ClassVar[str | None] = "taskId"


@dataclass(slots=True)
class Caller:
    """The agent request a forwarded request serves: where its progress goes, whom the upstream may ask.

    Set by the gateway's SDK handlers (:data:`CALLER`); the stdio fast path sets none (its calls carry no
    ``_meta``, so no progress token), and server-to-client requests then go to the stdio session.
    """

    session: Any  # mcpgov.control.AgentSession
    peer: Any = None  # the SDK ServerSession of the agent's connection
    request_id: Any = None
    progress: Callable[[float, float | None, str | None], Awaitable[None]] | None = None
    flight: Any = None  # mcpgov.mrtr.Flight: a 2026-07-28 agent, asked in rounds while the call is in flight
    modern: bool = False  # a 2026-07-28 agent request: no channel for a legacy server-to-client request


CALLER: ContextVar[Caller | None] = ContextVar("mcpgov_caller", default=None)


class UpstreamHandler:
    """What an upstream's notifications and server-to-client requests are handed to (the gateway's surface)."""

    async def notification(self, upstream: Upstream, message: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def server_request(
        self, upstream: Upstream, method: str, params: Any, context: Any
    ) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


class UpstreamError(Exception):
    """A JSON-RPC error answered by the upstream (forwarded to the agent unchanged)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", "error"))
        self.error = error

    @property
    def code(self) -> int:
        return int(self.error.get("code", types.INTERNAL_ERROR))


class UpstreamClosed(Exception):
    """The upstream is not connected (or the connection broke during the call)."""


class UpstreamTimeout(Exception):
    """No answer within the execution timeout."""


class RawChannel:
    """Requests with gateway ids on a stdio pipe shared with the SDK session."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.ids = itertools.count(1)
        self.closed = False
        self.closed_event = asyncio.Event()
        self._prefix = RAW_ID_PREFIX
        # notifications/tasks/status lines: the SDK 2.3 tables have no such notification at 2025-11-25,
        # so they are taken off the pipe here and handed to the gateway's tasks (mcpgov.tasks)
        self.on_task_status: Callable[[dict[str, Any]], None] | None = None
        # notifications/message lines: forwarded from the reader, in wire order (see stdio_transport)
        self.on_log: Callable[[types.LoggingMessageNotificationParams], Awaitable[None]] | None = None

    async def request(
        self, method: str, params: dict[str, Any], timeout: float, ready: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Send one request and return its response; ``ready()`` runs right before the line is written."""
        if self.closed:
            raise UpstreamClosed("connection closed")
        rid = f"{self._prefix}{next(self.ids)}"
        loop = asyncio.get_running_loop()  # once: on Python 3.11 each lookup is a getpid(2)
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.pending[rid] = fut
        line = (
            json.dumps(
                {"jsonrpc": "2.0", "id": rid, "method": method, "params": params},
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode()
            + b"\n"
        )
        timed_out: list[bool] = []

        def expire() -> None:
            if not fut.done():
                timed_out.append(True)
                fut.cancel()

        timer = loop.call_later(timeout, expire)  # cheaper than asyncio.wait_for on the hot path
        try:
            stdin = self.proc.stdin
            assert stdin is not None
            if ready is not None:
                ready()
            stdin.write(line)
            try:
                return await fut
            except asyncio.CancelledError:
                if not timed_out:
                    # the agent cancelled (or the gateway stops): the upstream should stop its work too
                    self._cancel(rid, "cancelled by the caller")
                    raise
                self._cancel(rid, f"timed out after {timeout:g}s")
                raise UpstreamTimeout(f"timed out after {timeout:g}s") from None
        finally:
            timer.cancel()
            self.pending.pop(rid, None)

    def _cancel(self, rid: str, reason: str) -> None:
        note = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": rid, "reason": reason},
        }
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(note).encode() + b"\n")

    def resolve(self, msg: dict[str, Any]) -> None:
        fut = self.pending.get(msg["id"])
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def close(self) -> None:
        self.closed = True
        self.closed_event.set()
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(UpstreamClosed("connection closed"))


@contextlib.asynccontextmanager
async def stdio_transport(config: UpstreamConfig) -> AsyncIterator[tuple[Any, Any, RawChannel]]:
    """Spawn the upstream; yield the SDK session's streams and the raw channel on the same pipes."""
    env = get_default_environment() | dict(config.env)
    proc = await asyncio.create_subprocess_exec(
        config.command or "",
        *config.args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=None,
        env=env,
        limit=MAX_LINE,
    )
    raw = RawChannel(proc)
    to_sdk_send, to_sdk_recv = anyio.create_memory_object_stream[SessionMessage | Exception](64)
    from_sdk_send, from_sdk_recv = anyio.create_memory_object_stream[SessionMessage](64)

    async def reader() -> None:
        assert proc.stdout is not None
        prefix = RAW_ID_PREFIX.encode()
        try:
            async with to_sdk_send:
                while True:
                    line = await proc.stdout.readline()
                    if not line:
                        break
                    if b'"notifications/tasks/status"' in line and raw.on_task_status is not None:
                        try:
                            note = json.loads(line)
                        except ValueError:
                            note = None
                        if isinstance(note, dict) and note.get("method") == "notifications/tasks/status":
                            raw.on_task_status(note)
                            continue
                    # fast check first: only our raw responses carry the reserved prefix right after "id"
                    if prefix in line:
                        try:
                            msg = json.loads(line)
                        except ValueError:
                            msg = None
                        if (
                            isinstance(msg, dict)
                            and isinstance(msg.get("id"), str)
                            and msg["id"].startswith(RAW_ID_PREFIX)
                            and ("result" in msg or "error" in msg)
                        ):
                            raw.resolve(msg)
                            continue
                    try:
                        message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                    except ValueError as exc:
                        log.error("upstream %s sent an invalid JSON-RPC line", config.slug)
                        await to_sdk_send.send(exc)
                        continue
                    if raw.on_log is not None and (params := _log_params(message)) is not None:
                        # forwarded before the next line is read: a log message the upstream wrote before a
                        # call's result reaches the agent before that result (the SDK hands notifications
                        # to tasks of their own, and a raw result is resolved right here, so the result
                        # could overtake it and the call's stream be closed when the log arrives)
                        try:
                            await raw.on_log(params)
                        except Exception:
                            log.exception("upstream %s: forwarding a log message failed", config.slug)
                        continue
                    await to_sdk_send.send(SessionMessage(message))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            raw.close()

    async def writer() -> None:
        assert proc.stdin is not None
        try:
            async with from_sdk_recv:
                async for sm in from_sdk_recv:
                    proc.stdin.write(
                        (sm.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n").encode()
                    )
                    await proc.stdin.drain()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, ConnectionError, OSError):
            pass

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            tg.start_soon(writer)
            try:
                yield to_sdk_recv, from_sdk_send, raw
            finally:
                raw.close()
                with anyio.CancelScope(shield=True):
                    await _stop(proc)
                tg.cancel_scope.cancel()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


def _log_params(message: Any) -> types.LoggingMessageNotificationParams | None:
    """The params of a well-formed ``notifications/message``; None for any other message (the SDK's)."""
    if not isinstance(message, types.JSONRPCNotification) or message.method != "notifications/message":
        return None
    meta = (message.params or {}).get("_meta")
    if isinstance(meta, dict) and SUBSCRIPTION_ID_META_KEY in meta:
        return None  # an event of a 2026-07-28 subscriptions/listen stream: the SDK's listen routes own it
    try:
        return types.LoggingMessageNotificationParams.model_validate(message.params or {})
    except ValueError:
        return None  # the SDK's validation warns and drops it, as for any malformed notification


async def _stop(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(Exception):
        assert proc.stdin is not None
        proc.stdin.close()
    for sig, wait in (("none", 2.0), ("terminate", 2.0), ("kill", 2.0)):
        if sig == "terminate":
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        elif sig == "kill":
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        with anyio.move_on_after(wait):
            await proc.wait()
            return


class Upstream:
    """One upstream MCP server, owned by its own task (an SDK session must be entered and left by one task).

    The task reconnects with backoff when the connection breaks: the SDK does not.
    """

    def __init__(self, config: UpstreamConfig, mode: str) -> None:
        self.config = config
        self.slug = config.slug
        self.mode = mode
        self.session: ClientSession | None = None
        self.raw: RawChannel | None = None
        self.tools: list[types.Tool] = []
        self.handler: UpstreamHandler | None = None
        # the agent requests being served by this upstream right now, newest last: a server-to-client
        # request (sampling, elicitation, roots) is asked of the agent behind the newest one
        self.callers: list[Caller] = []
        self.ready = anyio.Event()
        self.broken = anyio.Event()
        self.last_error = "not connected yet"
        # where this upstream's notifications/tasks/status go (the gateway's TaskRegistry)
        self.on_task_status: Callable[[Upstream, dict[str, Any]], None] | None = None

    async def list_tools(self) -> list[types.Tool]:
        session = self.session
        if session is None:
            raise UpstreamClosed(f"upstream {self.slug} is not connected ({self.last_error})")
        tools: list[types.Tool] = []
        cursor = None
        while True:
            page = await session.list_tools(cursor=cursor) if cursor else await session.list_tools()
            tools.extend(page.tools)
            if (cursor := page.next_cursor) is None:
                break
        self.tools = tools
        return tools

    @property
    def announces_tool_changes(self) -> bool:
        caps = self.capabilities
        return bool(caps is not None and caps.tools is not None and caps.tools.list_changed)

    @property
    def modern(self) -> bool:
        """The upstream speaks 2026-07-28 (stateless requests with their ``_meta`` envelope)."""
        session = self.session
        return session is not None and session.protocol_version in MODERN_PROTOCOL_VERSIONS

    @property
    def capabilities(self) -> types.ServerCapabilities | None:
        session = self.session
        return session.server_capabilities if session is not None else None

    @property
    def supports_tasks(self) -> bool:
        """Task-augmented ``tools/call`` (2025-11-25) can be relayed: the server says it runs them.

        The SDK 2.3 client refuses a ``CreateTaskResult`` answer and has no ``tasks/*`` methods at
        2025-11-25, so tasks ride the raw stdio channel, or on HTTP :meth:`_send_wire`.
        """
        caps = self.capabilities
        tasks = caps.tasks if caps is not None else None
        return bool(
            (self.raw is not None or self.config.url)
            and not self.modern
            and tasks is not None
            and tasks.requests is not None
            and tasks.requests.tools is not None
            and tasks.requests.tools.call is not None
        )

    @property
    def supports_task_extension(self) -> bool:
        """A 2026-07-28 server with the tasks extension (``resultType: "task"``; SDK session, stdio or HTTP)."""
        caps = self.capabilities
        return bool(self.modern and caps is not None and TASKS_EXTENSION in (caps.extensions or {}))

    async def task_request(self, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        """A ``tasks/*`` request; the result as the upstream sent it, or UpstreamError.

        2025-11-25: on the raw channel (the SDK has no such methods there); 2026-07-28 (the extension's
        ``tasks/get``, ``tasks/update``, ``tasks/cancel``): through the SDK session, which writes the
        per-request envelope and the ``Mcp-Name`` routing header.
        """
        if self.modern:
            session = self.session
            if session is None:
                raise UpstreamClosed(f"upstream {self.slug} is not connected ({self.last_error})")
            try:
                return await session.send_request(
                    TaskRequest(method=method, params=params), WIRE_DICT, request_read_timeout_seconds=timeout
                )
            except MCPError as exc:
                raise self._error(exc, timeout) from exc
        raw = self.raw
        if raw is None:
            return await self._send_wire(method, params, timeout)
        msg = await raw.request(method, params, timeout)
        if "error" in msg:
            raise UpstreamError(msg["error"])
        return msg["result"]

    async def _send_wire(self, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        """A 2025-11-25 request whose answer the SDK session would refuse: a task-augmented ``tools/call``
        (answered ``CreateTaskResult``) or ``tasks/*`` to an HTTP upstream.

        Why below ``ClientSession.send_request``: it checks every ``tools/call`` answer against the
        2025-11-25 ``CallToolResult`` (``content`` required), which a ``CreateTaskResult`` is not. This
        takes the same steps without that check: the session's envelope stamp (protocol-version header),
        its dispatcher (the transport, the session id, the timeout), the JSON-RPC error as ``MCPError``.
        ``tests/mcpgov/test_tasks_e2e.py`` runs server-everything's tasks over HTTP through it.
        """
        session = self.session
        if session is None:
            raise UpstreamClosed(f"upstream {self.slug} is not connected ({self.last_error})")
        data: dict[str, Any] = {"method": method, "params": params}
        opts: Any = {"timeout": timeout}
        session._stamp(data, opts)
        try:
            return await session._dispatcher.send_raw_request(method, data.get("params"), opts)
        except MCPError as exc:
            raise self._error(exc, timeout) from exc

    @contextlib.contextmanager
    def serving(self, caller: Caller | None) -> Iterator[None]:
        if caller is None:
            yield
            return
        self.callers.append(caller)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                self.callers.remove(caller)

    async def request(self, request: Any, result_type: Any, timeout: float) -> dict[str, Any]:
        """Any request of the wider surface (resources, prompts, completion, logging, ping) as a wire dict.

        Progress the upstream reports goes to the agent request in :data:`CALLER`; a cancelled caller
        cancels the upstream request (the SDK sends ``notifications/cancelled``).
        """
        session = self.session
        if session is None:
            raise UpstreamClosed(f"upstream {self.slug} is not connected ({self.last_error})")
        caller = CALLER.get()
        with self.serving(caller):
            try:
                result = await session.send_request(
                    request,
                    result_type,
                    request_read_timeout_seconds=timeout,
                    progress_callback=caller.progress if caller is not None else None,
                )
            except MCPError as exc:
                raise self._error(exc, timeout) from exc
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)

    def _error(self, exc: MCPError, timeout: float) -> Exception:
        if exc.code == types.CONNECTION_CLOSED:
            self.broken.set()
            return UpstreamClosed(exc.message)
        if exc.code == types.REQUEST_TIMEOUT:
            return UpstreamTimeout(f"timed out after {timeout:g}s")
        return UpstreamError(exc.error.model_dump(exclude_none=True))

    async def call_raw(
        self,
        tool: str,
        arguments: dict[str, Any] | None,
        timeout: float,
        *,
        meta: dict[str, Any] | None = None,
        task: dict[str, Any] | None = None,
        rounds: dict[str, Any] | None = None,
        ready: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """The ``tools/call`` result as a wire dict; raises UpstreamError / UpstreamClosed / UpstreamTimeout.

        ``meta`` becomes the request's ``_meta`` (the trace context, :mod:`mcpgov.tracing`); ``task``
        the task augmentation (answered with a ``CreateTaskResult``: raw channel of a 2025-11-25 server
        only, see :attr:`supports_tasks`). ``rounds``: the ``inputResponses`` / ``requestState`` of a
        2026-07-28 retry (:mod:`mcpgov.mrtr`); the result may then, as on any call to a 2026-07-28
        server, be an ``InputRequiredResult`` (``resultType``). ``ready()``, when given, runs before
        anything of the call is sent (on the raw channel: right before its line is written).
        """
        params: dict[str, Any] = {"name": tool}
        if arguments is not None:
            params["arguments"] = arguments
        if meta:
            params["_meta"] = meta
        if rounds:
            params.update(rounds)
        caller = CALLER.get()
        raw = self.raw
        modern = self.modern
        # the raw channel has no progress routing: a call whose agent asked for progress takes the SDK session
        # (a task rides the raw channel whatever it asked); nor does the raw channel write the per-request
        # envelope (_meta version and capabilities) a 2026-07-28 server needs
        on_raw = (
            raw is not None and (caller is None or caller.progress is None or task is not None) and not modern
        )
        if ready is not None and not on_raw:
            ready()  # every other way sends through the SDK: first
            ready = None
        if task is not None:
            if modern:
                raise UpstreamClosed(f"upstream {self.slug} cannot run tasks through the gateway")
            params["task"] = task
            if raw is None:  # HTTP: the SDK session would refuse the CreateTaskResult
                with self.serving(caller):
                    return await self._send_wire("tools/call", params, timeout)
        if on_raw:
            assert raw is not None
            if (
                caller is None
            ):  # the stdio fast path: nothing to register (no context manager on the hot path)
                msg = await raw.request("tools/call", params, timeout, ready)
            else:
                with self.serving(caller):
                    msg = await raw.request("tools/call", params, timeout, ready)
            if "error" in msg:
                raise UpstreamError(msg["error"])
            return msg["result"]
        session = self.session
        if session is None:
            raise UpstreamClosed(f"upstream {self.slug} is not connected ({self.last_error})")
        request = types.CallToolRequest(params=types.CallToolRequestParams.model_validate(params))
        with self.serving(caller):
            try:
                wire = await session.send_request(
                    request,
                    WIRE_DICT,
                    request_read_timeout_seconds=timeout,
                    progress_callback=caller.progress if caller is not None else None,
                )
            except MCPError as exc:
                raise self._error(exc, timeout) from exc
        if modern and wire.get("resultType") == "task":
            # a 2026-07-28 task (the gateway declares the extension): its shape is the extension's
            # (mcpgov.tasks checks it); the SDK already checked the envelope
            return wire
        result = CALL_RESULT.validate_python(wire, by_name=False)
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)

    def _callbacks(self) -> dict[str, Any]:
        """The SDK client callbacks: every notification and server-to-client request goes to the handler.

        Declaring them makes the gateway advertise sampling, elicitation and roots upstream; whether a
        request reaches the agent is the bundle's decision (:mod:`mcpgov.surface`), default deny.
        """

        async def on_message(message: Any) -> None:
            if isinstance(message, Exception):
                log.error("upstream %s: transport error: %s", self.slug, message)
                return
            if self.handler is not None:
                await self.handler.notification(self, message)

        def asker(method: str) -> Any:
            async def ask(context: Any, params: Any = None) -> Any:
                if self.handler is None:
                    return types.ErrorData(code=types.INVALID_REQUEST, message=f"{method} is not supported")
                return await self.handler.server_request(self, method, params, context)

            return ask

        return {
            "message_handler": on_message,
            "sampling_callback": asker("sampling/createMessage"),
            "elicitation_callback": asker("elicitation/create"),
            "list_roots_callback": asker("roots/list"),
            "sampling_capabilities": types.SamplingCapability(tools=types.SamplingToolsCapability()),
        }

    async def _log(self, params: types.LoggingMessageNotificationParams) -> None:
        if self.handler is not None:
            await self.handler.notification(self, types.LoggingMessageNotification(params=params))

    def _task_status(self, note: dict[str, Any]) -> None:
        if self.on_task_status is not None:
            self.on_task_status(self, note)

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[None]:
        """The SDK session; it declares the 2026-07-28 tasks extension, which the gateway runs for its agents
        (:mod:`mcpgov.tasks`): a 2026-07-28 server may then answer any call with a task."""
        c = self.config
        if c.url:
            async with Client(
                c.url,
                mode=self.mode,  # type: ignore[arg-type]
                cache=None,
                extensions=[GatewayTasks(self._task_status)],
                **self._callbacks(),
            ) as client:
                self.session, self.raw = client.session, None
                yield
            return
        async with (
            stdio_transport(c) as (read_stream, write_stream, raw),
            ClientSession(
                read_stream, write_stream, extensions={TASKS_EXTENSION: {}}, **self._callbacks()
            ) as session,
        ):
            if self.mode == "legacy":
                await session.initialize()
            else:
                from mcp.client._probe import negotiate_auto

                await negotiate_auto(session)
            self.session, self.raw = session, raw
            raw.on_task_status = self._task_status
            raw.on_log = self._log
            async with anyio.create_task_group() as tg:

                async def watch() -> None:  # the process died or closed its stdout
                    await raw.closed_event.wait()
                    self.broken.set()

                tg.start_soon(watch)
                yield
                tg.cancel_scope.cancel()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        backoff = Backoff(0.5, 30.0)
        started = False
        while True:
            try:
                async with self._connect():
                    await self.list_tools()
                    self.broken = anyio.Event()
                    self.ready.set()
                    log.info("upstream %s connected (%d tools)", self.slug, len(self.tools))
                    backoff.reset()
                    if not started:
                        started = True
                        task_status.started()
                    await self.broken.wait()
                    log.error("upstream %s: connection lost; reconnecting", self.slug)
            except Exception as exc:  # any failure to connect: keep trying, the gateway stays up
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                log.error("upstream %s unavailable: %s", self.slug, self.last_error)
            finally:
                self.session = self.raw = None
                self.ready = anyio.Event()
            if not started:
                started = True
                task_status.started()
            await anyio.sleep(backoff.next())
