"""MCP tasks (2025-11-25 ``tasks``) through the gateway: task-augmented ``tools/call``, ``tasks/*``, status notes.

Why its own wire handling: the SDK 2.3 message tables have no ``tasks/*`` methods and no
``notifications/tasks/status`` at 2025-11-25, and its client and server both refuse a ``CreateTaskResult``
as the answer to ``tools/call``. So these few messages are taken off the agent's wire before the SDK sees
them (stdio: :class:`StdioTasks`; HTTP: :mod:`mcpgov.fast_http`, after the SDK's own transport and auth
checks) and relayed on the upstream's raw stdio channel (:mod:`mcpgov.upstream`). Everything else keeps
the SDK's validation.

Governance: the call that creates a task is decided and audited like any call (INTENT before it is
forwarded, rate limits counted once); its RESULT is written when the task's result is fetched
(``tasks/result``, with the large-data checks) or when it ends otherwise (failed, cancelled). Task ids the
agent sees are minted here (``<server>:<random>``) and bound to the governance session that created the
task: any other session gets the answer of an unknown task. Polls are not calls (no rate limit), but each
is checked by :func:`mcpgov.decision.decide_task`; a halt, an ended session, a kill-switch flag or a
revoked client cancels the session's in-flight tasks upstream (``tasks/cancel``), audits it, and refuses
every later poll with the halt's refusal.

The 2026-07-28 extension (``io.modelcontextprotocol/tasks``: ``resultType: "task"``, ``tasks/get`` /
``tasks/update`` / ``tasks/cancel``) is served on the SDK server and sent upstream through the SDK session,
with the same binding, sweep and single RESULT; each input request of such a task is screened by the rule of
a server-to-client request; agents that did not declare it get the result of a task the gateway drives, and
an approval wait of one that did — or of a 2025-11-25 agent that task-augmented the call — is a task
hosted here. See ``docs/gateway.md``, "Tasks".
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

from mcpgov.bundle import Trigger
from mcpgov.decision import Decision, ToolCall, Verdict, decide_task, iso_ts
from mcpgov.mrtr import _valid_answer
from mcpgov.session import CallRecord, SessionStatus
from mcpgov.surface import POLICY_REFUSED, REVOKED_MESSAGE, ScreenedRequest, error_result, split_name
from mcpgov.upstream import TASKS_EXTENSION, Upstream, UpstreamClosed, UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext
    from mcp.server.lowlevel import Server

    from mcpgov.control import AgentSession
    from mcpgov.gateway import Gateway

log = logging.getLogger("mcpgov.gateway")

TASK_METHODS = frozenset({"tasks/get", "tasks/result", "tasks/list", "tasks/cancel"})
RELATED_TASK = "io.modelcontextprotocol/related-task"
TERMINAL = frozenset({"completed", "failed", "cancelled"})
TASK_NOT_FOUND = "Failed to retrieve task: Task not found"
POLL_TIMEOUT = 30.0  # tasks/get, tasks/cancel, tasks/list on the upstream
SWEEP_INTERVAL = 0.5  # how often in-flight tasks are checked against the session and the bundle
EXT_METHODS = ("tasks/get", "tasks/update", "tasks/cancel")  # the 2026-07-28 extension's methods
# a task of a 2026-07-28 upstream for an agent that cannot see it: polled by the gateway at this pace
DRIVE_POLL = (0.05, 1.0)
# the agent request being served declared the 2026-07-28 tasks extension (set by the SDK handler)
TASK_AGENT: ContextVar[bool] = ContextVar("mcpgov_task_agent", default=False)
# the agent request being served is a 2025-11-25 task-augmented tools/call (set by TaskRegistry._call)
LEGACY_TASK: ContextVar[bool] = ContextVar("mcpgov_legacy_task", default=False)


def declares_tasks(ctx: Any) -> bool:
    """A 2026-07-28 request whose per-request ``clientCapabilities`` name the tasks extension."""
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return False
    caps = (ctx.meta or {}).get(types.CLIENT_CAPABILITIES_META_KEY)
    extensions = caps.get("extensions") if isinstance(caps, dict) else None
    return isinstance(extensions, dict) and TASKS_EXTENSION in extensions


def _declared_capabilities(ctx: Any) -> types.ClientCapabilities:
    """What the agent declared on this 2026-07-28 request (nothing, if malformed): input requests need it."""
    caps = (ctx.meta or {}).get(types.CLIENT_CAPABILITIES_META_KEY)
    try:
        return types.ClientCapabilities.model_validate(caps if isinstance(caps, dict) else {}, by_name=False)
    except ValueError:
        return types.ClientCapabilities()


@contextlib.contextmanager
def task_agent(ctx: Any) -> Iterator[None]:
    """Within the SDK's ``tools/call`` handler: whether the agent may be answered with a task (:data:`TASK_AGENT`)."""
    token = TASK_AGENT.set(declares_tasks(ctx))
    try:
        yield
    finally:
        TASK_AGENT.reset(token)


class TaskParams(types.RequestParams):
    """The params of ``tasks/get``, ``tasks/update``, ``tasks/cancel`` (2026-07-28 extension)."""

    task_id: Annotated[str, Field(alias="taskId")]
    input_responses: Annotated[dict[str, Any] | None, Field(alias="inputResponses")] = None


def is_task_message(msg: Any) -> bool:
    """A request for this module: ``tasks/*``, or a ``tools/call`` carrying ``params.task``."""
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0" or type(msg.get("id")) not in (int, str):
        return False
    method = msg.get("method")
    if method in TASK_METHODS:
        return True
    params = msg.get("params")
    return method == "tools/call" and isinstance(params, dict) and "task" in params


class TaskError(Exception):
    """A JSON-RPC error answered to the agent."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            self.error["data"] = data


def _not_found() -> TaskError:
    # the same answer for a task that never existed, expired, or belongs to another session or agent
    return TaskError(types.INVALID_PARAMS, TASK_NOT_FOUND)


def _refusal(decision: Decision) -> TaskError:
    return TaskError(POLICY_REFUSED, decision.message, {"trigger": str(decision.trigger)})


@dataclass(eq=False)
class GatewayTask:
    """One upstream task as the gateway holds it for the session that created it."""

    id: str  # what the agent sees
    session: AgentSession
    upstream: Upstream
    upstream_id: str
    call: ToolCall
    intent: dict[str, Any]
    started: float  # perf_counter at forwarding
    timeout: float  # the call's execution timeout: how long a tasks/result may wait upstream
    expires: float  # monotonic; the task's ttl from its creation (inf when unlimited)
    task: dict[str, Any] = field(default_factory=dict)  # the last state seen, with the gateway's id
    refusal: Decision | None = None  # governance stopped it: every poll gets this refusal
    # 2026-07-28 extension (upstream and agent): its input requests as screened, the keys answered or
    # declined by the gateway, and the terminal payload shown once the RESULT is written
    modern: bool = False
    approval: bool = False  # the gateway's own task: an approval wait, then the forwarded call
    forwarding: bool = False  # (approval) approved and forwarded: it runs to its end
    scope: anyio.CancelScope | None = None  # (approval) the wait, withdrawn by a cancel or a halt
    ended: anyio.Event | None = None  # (approval) set once it is terminal: a 2025-11-25 tasks/result waits
    asked: dict[str, tuple[str, ScreenedRequest]] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)
    final: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        return str(self.task.get("status") or "working")

    @property
    def open(self) -> bool:
        """Its RESULT is not written yet."""
        return self.intent["call_id"] in self.session.spool.open_intents


class TaskRegistry:
    """The tasks of every session of one gateway, and the sweep that stops them when governance says so."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.tasks: dict[str, GatewayTask] = {}
        self.by_upstream: dict[tuple[str, str], GatewayTask] = {}
        # where the agent's notifications go, set by the transport that carries tasks: stdio has one agent
        self.notify: Callable[[AgentSession, dict[str, Any]], None] | None = None
        self.served = False  # a transport takes the task messages off the wire (else nothing is advertised)
        self._wake = anyio.Event()
        for up in gateway.upstreams.values():
            up.on_task_status = self.on_status

    # capability

    def capability(self) -> types.ServerTasksCapability | None:
        """``tasks`` for the agent: only when a transport relays them and an upstream runs task calls."""
        if not self.served or not any(up.supports_tasks for up in self.gateway.upstreams.values()):
            return None
        return types.ServerTasksCapability(
            list=types.TasksListCapability(),
            cancel=types.TasksCancelCapability(),
            requests=types.ServerTasksRequestsCapability(
                tools=types.TasksToolsCapability(call=types.TasksCallCapability())
            ),
        )

    # the wire

    async def handle(self, sess: AgentSession, msg: dict[str, Any]) -> dict[str, Any]:
        """Answer one task message (:func:`is_task_message`) of ``sess``: the JSON-RPC response."""
        request_id = msg["id"]
        params = msg.get("params")
        if params is None:
            params = {}
        try:
            if not isinstance(params, dict):
                raise TaskError(types.INVALID_PARAMS, "params must be an object")
            method = msg["method"]
            if method == "tools/call":
                result = await self._call(sess, params, request_id)
            elif method == "tasks/list":
                result = await self._list(sess, params)
            else:
                rec = self._find(sess, params)
                if method == "tasks/get":
                    result = await self._get(rec)
                elif method == "tasks/result":
                    result = await self._result(rec)
                else:
                    result = await self._cancel(rec)
        except TaskError as exc:
            return {"jsonrpc": "2.0", "id": request_id, "error": exc.error}
        except UpstreamError as exc:
            error = {k: v for k, v in exc.error.items() if k in ("code", "message", "data")}
            error.setdefault("code", types.INTERNAL_ERROR)
            error.setdefault("message", "")
            return {"jsonrpc": "2.0", "id": request_id, "error": error}
        except Exception as exc:  # never leave the agent without an answer
            log.exception("%s failed inside the gateway", msg.get("method"))
            return {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {"code": types.INTERNAL_ERROR, "message": str(exc)},
            }
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    async def _call(self, sess: AgentSession, params: dict[str, Any], request_id: Any) -> dict[str, Any]:
        name, arguments, task = params.get("name"), params.get("arguments"), params.get("task")
        if not isinstance(name, str) or (arguments is not None and not isinstance(arguments, dict)):
            raise TaskError(types.INVALID_PARAMS, "tools/call needs a name and object arguments")
        if not isinstance(task, dict):
            raise TaskError(types.INVALID_PARAMS, 'task must be an object ({"ttl": ms})')
        gw = self.gateway
        ex = gw.index.get(name)
        parts = (ex.server, ex.tool) if ex is not None else split_name(name)
        upstream = gw.upstreams.get(parts[0]) if parts is not None else None
        meta = params.get("_meta")
        trace = (
            {k: meta[k] for k in ("traceparent", "tracestate") if k in meta}
            if isinstance(meta, dict)
            else None
        )
        # a server that does not run tasks gets the call as a plain one (the spec's rule for a receiver
        # without the capability); the agent then gets the tool's result itself
        augment = {"ttl": task["ttl"]} if isinstance(task.get("ttl"), int) else {}
        token = LEGACY_TASK.set(True)  # an approval wait of this call is a gateway task (approval_task)
        try:
            return await gw.execute(
                sess,
                name,
                arguments,
                meta=trace or None,
                request_id=request_id,
                task=augment if upstream is not None and upstream.supports_tasks else None,
            )
        finally:
            LEGACY_TASK.reset(token)

    def created(
        self,
        sess: AgentSession,
        intent: dict[str, Any],
        call: ToolCall,
        upstream: Upstream,
        result: dict[str, Any],
        *,
        timeout: float,
        started: float,
    ) -> dict[str, Any]:
        """The upstream made a task of an allowed call: mint the agent's id; the RESULT waits for its end."""
        up_task = result["task"]
        rec = self._register(sess, intent, call, upstream, up_task, up_task.get("ttl"), timeout, started)
        rec.task = self._translate(rec, up_task)
        answer = self._translate(rec, result)
        answer["task"] = dict(rec.task)
        return answer

    def _register(
        self,
        sess: AgentSession,
        intent: dict[str, Any],
        call: ToolCall,
        upstream: Upstream,
        up_task: dict[str, Any],
        ttl: Any,
        timeout: float,
        started: float,
        *,
        modern: bool = False,
    ) -> GatewayTask:
        """An upstream task of an allowed call (either generation): the agent's id minted, the task held."""
        upstream_id = up_task.get("taskId")
        if not isinstance(upstream_id, str) or not upstream_id:
            summary = "the upstream answered with a task without a taskId"
            sess.spool.result(intent, status="fail", result_summary=summary, nbytes=0, duration_ms=0.0)
            raise TaskError(types.INTERNAL_ERROR, summary)
        gid = f"{upstream.slug}:{secrets.token_urlsafe(18)}"
        expires = time.monotonic() + ttl / 1000 if isinstance(ttl, int | float) and ttl >= 0 else math.inf
        rec = GatewayTask(
            gid, sess, upstream, upstream_id, call, intent, started, timeout, expires, modern=modern
        )
        self.tasks[gid] = rec
        self.by_upstream[(upstream.slug, upstream_id)] = rec
        log.info(
            "task %s created on %s for %s.%s (upstream id %s)",
            gid,
            upstream.slug,
            call.server,
            call.tool,
            upstream_id,
        )
        self.nudge()
        return rec

    def _find(self, sess: AgentSession, params: dict[str, Any], *, modern: bool = False) -> GatewayTask:
        rec = self.tasks.get(params.get("taskId")) if isinstance(params.get("taskId"), str) else None
        if rec is None or rec.session is not sess or rec.modern is not modern:
            raise _not_found()
        if time.monotonic() >= rec.expires:
            self._forget(rec)
            raise _not_found()
        return rec

    def _check(self, rec: GatewayTask) -> Decision | None:
        """The refusal that stops this task now, if any (:func:`decide_task`; a revoked client)."""
        if rec.refusal is not None:
            return rec.refusal
        gw = self.gateway
        if gw.portal is not None and gw.portal.revoked:
            return Decision(Verdict.REFUSE, Trigger.KILL_SWITCH_FLAG, REVOKED_MESSAGE)
        decision = decide_task(gw.policy, rec.session.state, rec.call, time.time())
        return None if decision.allowed else decision

    async def _admit(self, rec: GatewayTask) -> None:
        """A poll goes on only while the task may: otherwise it is stopped (cancelled upstream) and refused."""
        decision = self._check(rec)
        if decision is not None:
            await self.stop(rec, decision)
            raise _refusal(rec.refusal or decision)

    async def _get(self, rec: GatewayTask) -> dict[str, Any]:
        await self._admit(rec)
        if rec.approval:
            return dict(rec.task)
        result = await rec.upstream.task_request("tasks/get", {"taskId": rec.upstream_id}, POLL_TIMEOUT)
        self._seen(rec, result)
        await self._admit(rec)  # a halt while the upstream answered
        return self._translate(rec, result)

    async def _result(self, rec: GatewayTask) -> dict[str, Any]:
        await self._admit(rec)
        if rec.approval:
            return await self._approval_result(rec)
        try:
            result = await rec.upstream.task_request("tasks/result", {"taskId": rec.upstream_id}, rec.timeout)
        except UpstreamTimeout:
            raise TaskError(
                types.INTERNAL_ERROR, f"the task's result did not come within {rec.timeout:g}s; ask again"
            ) from None
        except (UpstreamError, UpstreamClosed) as exc:
            await self._admit(rec)
            if rec.open:
                self.gateway._forward_failed(rec.session, rec.intent, rec.call, exc, self._ms(rec))
            if isinstance(exc, UpstreamClosed):
                raise TaskError(
                    types.INTERNAL_ERROR, f"MCP call failed: {exc} (recorded as status=fail)"
                ) from exc
            raise
        await self._admit(rec)  # halted while the result was on its way: it is not delivered
        if rec.task.get("status") not in TERMINAL:
            rec.task = {**rec.task, "status": "failed" if result.get("isError") else "completed"}
        answer = self._translate(rec, result)
        if rec.open:
            meta = answer.get("_meta")
            answer = self.gateway.complete_call(rec.session, rec.intent, rec.call, answer, self._ms(rec))
            if meta is not None:
                answer.setdefault("_meta", meta)
        else:
            content = answer.get("content")
            if content:
                from mcpgov.surface import prefix_resource_uris

                prefix_resource_uris(rec.call.server, content)
        answer.setdefault("_meta", {})[RELATED_TASK] = {"taskId": rec.id}
        return answer

    async def _cancel(self, rec: GatewayTask) -> dict[str, Any]:
        await self._admit(rec)
        if rec.approval:
            if rec.status in TERMINAL:
                raise TaskError(
                    types.INVALID_PARAMS, f"Cannot cancel task: already in terminal status '{rec.status}'"
                )
            self._approval_cancel(rec)
            return dict(rec.task)
        result = await rec.upstream.task_request("tasks/cancel", {"taskId": rec.upstream_id}, POLL_TIMEOUT)
        self._seen(rec, result)
        if rec.open:
            self._record_end(rec, "fail", "task cancelled by the agent")
        return self._translate(rec, result)

    async def _list(self, sess: AgentSession, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("cursor") is not None:
            raise TaskError(types.INVALID_PARAMS, "Invalid cursor")  # one page: this gateway never gives one
        now = time.monotonic()
        out = []
        for rec in [r for r in self.tasks.values() if r.session is sess and not r.modern]:
            if now >= rec.expires:
                self._forget(rec)
                continue
            if (
                not rec.approval
                and rec.refusal is None
                and rec.status not in TERMINAL
                and self._check(rec) is None
            ):
                with contextlib.suppress(Exception):  # the last state seen stands in for an upstream away
                    self._seen(
                        rec, await rec.upstream.task_request("tasks/get", {"taskId": rec.upstream_id}, 5.0)
                    )
            out.append(dict(rec.task))
        return {"tasks": out}

    # upstream notifications

    def on_status(self, upstream: Upstream, note: dict[str, Any]) -> None:
        """``notifications/tasks/status`` from an upstream: to the session that owns the task, translated."""
        params = note.get("params")
        upstream_id = params.get("taskId") if isinstance(params, dict) else None
        rec = self.by_upstream.get((upstream.slug, upstream_id)) if isinstance(upstream_id, str) else None
        if rec is None or rec.refusal is not None:
            return  # not a task of ours, or one governance stopped (its agent is told by its polls)
        self._seen(rec, params)
        if self.notify is not None and rec.session.state.state != SessionStatus.ENDED:
            self.notify(
                rec.session,
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/tasks/status",
                    "params": self._translate(rec, params),
                },
            )

    def notify_peer(self, sess: AgentSession, note: dict[str, Any]) -> None:
        """HTTP (2025-11-25 sessions): a status notification on the agent's standalone GET stream.

        The call's own SSE stream has ended with its ``CreateTaskResult``; an agent without a GET stream
        (or whose connection the gateway has not seen on the SDK path yet) polls, as the spec expects.
        """
        peer, tg = sess.peer, self.gateway.tg
        if peer is None or tg is None:
            return
        try:
            message = types.TaskStatusNotification.model_validate(
                {"method": note["method"], "params": note["params"]}, by_name=False
            )
        except ValueError:
            log.info("task status notification not relayed: not a 2025-11-25 task status")
            return
        tg.start_soon(self.gateway.surface._send, peer, message)

    # governance

    def nudge(self) -> None:
        """Check the in-flight tasks now (a halt, a new bundle)."""
        self._wake.set()

    async def run(self) -> None:
        """The sweep: stop every task that may not go on, within ``SWEEP_INTERVAL`` of the reason."""
        while True:
            with anyio.move_on_after(SWEEP_INTERVAL):
                await self._wake.wait()
            self._wake = anyio.Event()
            now = time.monotonic()
            for rec in list(self.tasks.values()):
                if now >= rec.expires:
                    self._forget(rec)
                    continue
                if rec.refusal is not None or (rec.status in TERMINAL and not rec.open):
                    continue
                decision = self._check(rec)
                if decision is not None:
                    with contextlib.suppress(Exception):
                        await self.stop(rec, decision)

    async def stop(self, rec: GatewayTask, decision: Decision) -> None:
        """Governance stops a task: cancelled upstream (if still running), audited, its polls refused."""
        if rec.refusal is not None:
            return
        rec.refusal = decision
        sess = rec.session
        if decision.new_state is not None and not sess.state.blocked:
            self.gateway._apply_state(sess, decision)  # a flag turned off halts the session, as a call would
            rec.refusal = Decision(Verdict.REFUSE, decision.trigger, decision.message)
        trigger = decision.trigger
        if trigger == Trigger.SESSION_HALTED and sess.state.trigger is not None:
            trigger = sess.state.trigger  # the halt's own trigger names why the task stopped
        reason = (decision.reason or decision.message.splitlines()[0])[:200]
        running = rec.status not in TERMINAL
        if rec.approval:
            if self._approval_stop(rec) and sess.state.state != SessionStatus.ENDED:
                with contextlib.suppress(Exception):
                    self._record_end(
                        rec, "blocked", f"approval wait stopped by governance: {reason}", trigger=trigger
                    )
            elif rec.open:
                with contextlib.suppress(Exception):
                    self._record_end(rec, "fail", f"approval wait ended with the session: {reason}")
            return
        if running:
            log.warning(
                "task %s (%s.%s): cancelling upstream: %s", rec.id, rec.call.server, rec.call.tool, reason
            )
            try:
                result = await rec.upstream.task_request(
                    "tasks/cancel", {"taskId": rec.upstream_id}, POLL_TIMEOUT
                )
                self._seen(rec, result)
                summary = f"task cancelled upstream by governance: {reason}"
            except Exception as exc:  # the upstream is away or the task just ended: still refused here
                summary = f"task stopped by governance (upstream cancel failed: {exc}): {reason}"
        else:
            summary = f"task result withheld by governance: {reason}"
        rec.task = {**rec.task, "status": "cancelled", "statusMessage": reason}
        portal = self.gateway.portal
        if portal is not None and portal.revoked:
            return  # a revoked client spools nothing new (the portal would not take it)
        if rec.open and sess.state.state != SessionStatus.ENDED:
            with contextlib.suppress(Exception):  # a spool closed by the session's end meanwhile
                self._record_end(rec, "blocked", summary, trigger=trigger)
        elif rec.open:
            with contextlib.suppress(Exception):
                self._record_end(rec, "fail", summary)

    # 2026-07-28: the tasks extension (io.modelcontextprotocol/tasks)

    def extension(self) -> bool:
        """Whether ``server/discover`` advertises the extension: an upstream runs it."""
        return any(up.supports_task_extension for up in self.gateway.upstreams.values())

    def register(self, server: Server[Any]) -> None:
        """``tasks/get``, ``tasks/update``, ``tasks/cancel`` on the SDK server (2026-07-28 requests only)."""
        for method in EXT_METHODS:
            server.add_request_handler(method, TaskParams, self._ext_handler(method))

    def _ext_handler(self, method: str) -> Callable[..., Any]:
        async def handle(ctx: ServerRequestContext[Any], params: TaskParams) -> dict[str, Any]:
            if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
                # 2025-11-25 sessions have their own tasks/* (taken off the wire before the SDK)
                raise MCPError(types.METHOD_NOT_FOUND, "Method not found", method)
            sess = self.gateway.surface.session(ctx)
            try:
                rec = self._find(sess, {"taskId": params.task_id}, modern=True)
                if method == "tasks/get":
                    result = await self._ext_get(rec, _declared_capabilities(ctx))
                elif method == "tasks/update":
                    result = await self._ext_update(rec, params.input_responses)
                else:
                    result = await self._ext_cancel(rec)
            except TaskError as exc:
                raise MCPError(exc.error["code"], exc.error["message"], exc.error.get("data")) from exc
            except UpstreamError as exc:
                raise MCPError(exc.code, str(exc.error.get("message", "")), exc.error.get("data")) from exc
            except UpstreamClosed as exc:
                raise MCPError(types.INTERNAL_ERROR, f"{method} failed: {exc}") from exc
            if ctx.request is not None:  # HTTP: the run this answer belongs to, as on every answer
                from mcpgov.identity import RUN_META_KEY

                result["_meta"] = {**(result.get("_meta") or {}), RUN_META_KEY: sess.run_id}
            return result

        return handle

    async def created_ext(
        self,
        sess: AgentSession,
        intent: dict[str, Any],
        call: ToolCall,
        upstream: Upstream,
        result: dict[str, Any],
        *,
        timeout: float,
        started: float,
    ) -> dict[str, Any]:
        """A 2026-07-28 upstream answered an allowed call with a task: the agent's task, or driven to its end.

        An agent that declared the extension gets a ``CreateTaskResult`` with the gateway's id (its RESULT
        waits for the task's end); any other agent gets the call's result, the gateway polling the upstream
        within the call's execution timeout (the extension's rule for a client keeping its plain contract).
        """
        ttl = result.get("ttlMs")
        rec = self._register(sess, intent, call, upstream, result, ttl, timeout, started, modern=True)
        rec.task = self._ext_fields(rec, result)
        if not TASK_AGENT.get():
            return await self._drive(rec, result)
        return {"resultType": "task", **rec.task}

    def _ext_fields(self, rec: GatewayTask, upstream_task: dict[str, Any]) -> dict[str, Any]:
        """The ``Task`` fields of an upstream answer, with the gateway's id (payloads are shown separately)."""
        drop = ("_meta", "resultType", "result", "error", "inputRequests")
        fields = {k: copy.deepcopy(v) for k, v in upstream_task.items() if k not in drop}
        fields["taskId"] = rec.id
        return fields

    async def _ext_get(self, rec: GatewayTask, caps: types.ClientCapabilities) -> dict[str, Any]:
        await self._admit(rec)
        if rec.approval:
            return {**rec.task, **(rec.final or {})}
        up = await rec.upstream.task_request("tasks/get", {"taskId": rec.upstream_id}, POLL_TIMEOUT)
        await self._admit(rec)  # a halt while the upstream answered: nothing more reaches the agent
        return await self._ext_view(rec, up, caps)

    async def _ext_view(
        self, rec: GatewayTask, up: dict[str, Any], caps: types.ClientCapabilities | None
    ) -> dict[str, Any]:
        """The agent's ``DetailedTask`` for an upstream one: the result checked and audited once, the error
        passed on, each input request screened (``caps`` None: nobody may be asked)."""
        if rec.final is not None:  # terminal and recorded: the same answer again
            return {**rec.task, **rec.final}
        rec.task = {**rec.task, **self._ext_fields(rec, up)}
        status = rec.status
        if status == "completed":
            result = up.get("result") if isinstance(up.get("result"), dict) else {"content": []}
            if rec.open:
                result = self.gateway.complete_call(rec.session, rec.intent, rec.call, result, self._ms(rec))
            rec.final = {"result": result}
        elif status == "failed":
            error = up.get("error") if isinstance(up.get("error"), dict) else {}
            error = {
                "code": error.get("code", types.INTERNAL_ERROR),
                "message": str(error.get("message", "")),
            }
            if rec.open:
                self._record_end(
                    rec, "fail", f"task failed upstream: error {error['code']}: {error['message']}"
                )
            rec.final = {"error": error}
        elif status == "cancelled":
            if rec.open:
                self._record_end(
                    rec, "fail", f"task cancelled upstream: {rec.task.get('statusMessage') or ''}"
                )
            rec.final = {}
        elif status == "input_required":
            requests = up.get("inputRequests") if isinstance(up.get("inputRequests"), dict) else {}
            shown = await self._screen(rec, requests, caps)
            # questions the gateway answered itself (declined) are not the agent's: the task is working
            return {**rec.task, "inputRequests": shown} if shown else {**rec.task, "status": "working"}
        if rec.final is not None:
            self._forget_later(rec)
            return {**rec.task, **rec.final}
        return dict(rec.task)

    async def _screen(
        self, rec: GatewayTask, requests: dict[str, Any], caps: types.ClientCapabilities | None
    ) -> dict[str, Any]:
        """Each input request of the task decided once (the rule of a legacy server-to-client request).

        A refused elicitation is declined upstream on the user's behalf and never shown; a refused sampling
        or roots request stops the task (cancelled upstream, RESULT ``blocked``, its polls refused).
        """
        gw = self.gateway
        shown: dict[str, Any] = {}
        declined: dict[str, Any] = {}
        for key, request in requests.items():
            if key in rec.answered:
                continue  # answered; the upstream has not moved on yet
            seen = rec.asked.get(key)
            if seen is None:
                request = request if isinstance(request, dict) else {}
                method = str(request.get("method"))
                wire = dict(request.get("params") or {}) if isinstance(request.get("params"), dict) else {}
                screened = gw.surface.screen_server_request(
                    rec.session,
                    rec.upstream.slug,
                    method,
                    wire,
                    None,
                    unclear="" if caps is not None else "the agent cannot be asked inside this task",
                    capabilities=caps or types.ClientCapabilities(),
                )
                if not screened.allowed:
                    if method == "elicitation/create":
                        rec.answered.add(key)
                        declined[key] = {"action": "decline"}
                        continue
                    stop = Decision(
                        Verdict.REFUSE,
                        Trigger.SERVER_REQUEST_DENIED,
                        screened.message,
                        reason=screened.reason,
                    )
                    await self.stop(rec, stop)
                    raise _refusal(rec.refusal or stop)
                rec.asked[key] = seen = (method, screened)
            shown[key] = {"method": seen[0], "params": seen[1].wire}
        if declined:
            await rec.upstream.task_request(
                "tasks/update", {"taskId": rec.upstream_id, "inputResponses": declined}, POLL_TIMEOUT
            )
        return shown

    async def _ext_update(self, rec: GatewayTask, responses: dict[str, Any] | None) -> dict[str, Any]:
        """The agent's answers: only to questions it was shown and has not answered, each audited."""
        await self._admit(rec)
        if rec.approval:
            return {}  # the gateway's approval task asks nothing of the agent
        if not isinstance(responses, dict):
            raise TaskError(types.INVALID_PARAMS, "inputResponses must be an object")
        gw = self.gateway
        forward: dict[str, Any] = {}
        for key, answer in responses.items():
            seen = rec.asked.get(key)
            if seen is None or key in rec.answered:
                continue  # never shown to this agent, or answered: ignored (the spec's rule for such keys)
            method, screened = seen
            rec.answered.add(key)
            if not _valid_answer(method, answer):
                gw.surface.server_request_failed(
                    rec.session,
                    screened.intent,
                    rec.upstream.slug,
                    method,
                    "not a valid answer",
                    time.perf_counter(),
                )
                continue
            gw.surface.answered(rec.session, screened.intent, rec.upstream.slug, method, answer, 0.0)
            forward[key] = answer
        if forward:
            await rec.upstream.task_request(
                "tasks/update", {"taskId": rec.upstream_id, "inputResponses": forward}, POLL_TIMEOUT
            )
        return {}

    async def _ext_cancel(self, rec: GatewayTask) -> dict[str, Any]:
        await self._admit(rec)
        if rec.approval:
            if rec.status not in TERMINAL:
                self._approval_cancel(rec)
            return {}
        await rec.upstream.task_request("tasks/cancel", {"taskId": rec.upstream_id}, POLL_TIMEOUT)
        if rec.open:
            self._record_end(rec, "fail", "task cancelled by the agent")
        return {}

    async def _drive(self, rec: GatewayTask, created: dict[str, Any]) -> dict[str, Any]:
        """The task of an agent that did not declare the extension: polled here, answered as a plain call.

        Governance still applies (the sweep stops it on a halt); an input request inside the task cannot be
        put to this agent: an elicitation is declined on the user's behalf, a sampling or roots request stops
        the task and fails the call (said in the answer and the RESULT).
        """
        gw = self.gateway
        up: dict[str, Any] = created
        try:
            with anyio.move_on_after(max(rec.timeout - (time.perf_counter() - rec.started), 0.0)):
                while True:
                    if rec.refusal is not None:  # stopped by governance (RESULT written by stop)
                        return error_result(rec.refusal.message)
                    if up.get("status") in TERMINAL:
                        view = await self._ext_view(rec, up, None)
                        if "error" in view:
                            raise UpstreamError(view["error"])
                        return view.get("result", {"content": []})
                    if up.get("status") == "input_required":
                        requests = (
                            up.get("inputRequests") if isinstance(up.get("inputRequests"), dict) else {}
                        )
                        try:  # nobody can be asked: elicitations declined, sampling or roots stop the task
                            await self._screen(rec, requests, None)
                        except TaskError as exc:
                            return error_result(exc.error["message"])
                    interval = up.get("pollIntervalMs")
                    pace = interval / 1000 if isinstance(interval, int | float) else DRIVE_POLL[0]
                    await anyio.sleep(min(max(pace, DRIVE_POLL[0]), DRIVE_POLL[1]))
                    if rec.refusal is None:
                        up = await rec.upstream.task_request(
                            "tasks/get", {"taskId": rec.upstream_id}, POLL_TIMEOUT
                        )
            why = f"the task did not end within {rec.timeout:g}s"
            with contextlib.suppress(Exception):
                await rec.upstream.task_request("tasks/cancel", {"taskId": rec.upstream_id}, POLL_TIMEOUT)
            if rec.open:
                self._record_end(rec, "fail", f"{why}; cancelled upstream")
            return error_result(f"MCP call failed: {why} (recorded as status=fail; cancelled upstream)")
        except (UpstreamClosed, UpstreamTimeout) as exc:
            if rec.open:
                gw._forward_failed(rec.session, rec.intent, rec.call, exc, self._ms(rec))
            return error_result(f"MCP call failed: {exc} (recorded as status=fail; not retried)")
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await rec.upstream.task_request("tasks/cancel", {"taskId": rec.upstream_id}, 5.0)
                if rec.open:
                    gw._forward_failed(rec.session, rec.intent, rec.call, None, self._ms(rec))
            raise
        finally:
            self._forget(rec)

    def _forget_later(self, rec: GatewayTask) -> None:
        """A terminal 2026-07-28 task stays pollable (the same answer) until its ttl; at most 10 minutes."""
        rec.expires = min(rec.expires, time.monotonic() + 600.0)

    # the gateway's own task: a long approval wait (2026-07-28 agents that declared the extension, and
    # 2025-11-25 agents that task-augmented the call)

    def approval_as_task(self, sess: AgentSession) -> bool:
        return (TASK_AGENT.get() or LEGACY_TASK.get()) and self.gateway.portal is not None

    async def approval_task(
        self, sess: AgentSession, intent: dict[str, Any], name: str, call: ToolCall, decision: Decision
    ) -> dict[str, Any]:
        """An approval-required call answered with a gateway-hosted task: ``working`` while a person decides
        in the portal, then the forwarded call's result (or the refusal) as the task's ``result``.

        A 2026-07-28 agent (the extension) gets ``resultType: "task"`` and polls ``tasks/get``; a 2025-11-25
        agent that task-augmented the call gets a ``CreateTaskResult`` and ``tasks/get|result|list|cancel``.
        """
        gw = self.gateway
        legacy = LEGACY_TASK.get() and not TASK_AGENT.get()
        gid = f"{call.server}:{secrets.token_urlsafe(18)}"
        upstream = gw.upstreams.get(call.server)
        timeout = decision.timeout or gw.options.default_timeout
        rec = GatewayTask(gid, sess, upstream, "", call, intent, time.perf_counter(), timeout, math.inf)  # type: ignore[arg-type]
        rec.modern, rec.approval, rec.ended = not legacy, True, anyio.Event()
        stamp = iso_ts(time.time())
        waiting = f"waiting for the approval of a person in the governance portal (call {intent['call_id']})"
        if legacy:  # a 2025-11-25 Task
            rec.task = {
                "taskId": gid,
                "status": "working",
                "statusMessage": waiting,
                "createdAt": stamp,
                "lastUpdatedAt": stamp,
                "ttl": None,
                "pollInterval": 1000,
            }
        else:
            rec.task = {
                "taskId": gid,
                "status": "working",
                "statusMessage": waiting,
                "createdAt": stamp,
                "lastUpdatedAt": stamp,
                "ttlMs": None,
                "pollIntervalMs": 1000,
            }
        self.tasks[gid] = rec
        assert gw.tg is not None
        gw.tg.start_soon(self._approve_then_forward, rec, name, decision)
        log.warning(
            "call %s (%s.%s) waits for approval (as task %s)", intent["call_id"], call.server, call.tool, gid
        )
        if legacy:
            return {"task": dict(rec.task)}
        return {"resultType": "task", **rec.task}

    async def _approve_then_forward(self, rec: GatewayTask, name: str, decision: Decision) -> None:
        gw, sess, call = self.gateway, rec.session, rec.call
        with anyio.CancelScope() as scope:
            rec.scope = scope
            verdict = await gw._await_approval(sess, rec.intent, call, decision)
            if rec.refusal is not None:
                return
            if verdict.verdict != Verdict.ALLOW:
                self._approval_end(rec, {"result": gw._refuse(sess, rec.intent, call, verdict, time.time())})
                return
            rec.forwarding = True
            rec.task = {
                **rec.task,
                "statusMessage": "approved; running",
                "lastUpdatedAt": iso_ts(time.time()),
            }
            self._approval_note(rec)
            # a task the upstream makes of it is driven here, not shown; nor is it augmented again
            token, legacy = TASK_AGENT.set(False), LEGACY_TASK.set(False)
            try:
                with gw.observer.call(sess, name) as obs:
                    result = await gw.forward(
                        sess, rec.intent, name, call, verdict.timeout, obs, now=time.time()
                    )
                self._approval_end(rec, {"result": result})
            except UpstreamError as exc:  # its RESULT written by forward
                error = {k: v for k, v in exc.error.items() if k in ("code", "message", "data")}
                self._approval_end(rec, {"error": error}, status="failed")
            finally:
                LEGACY_TASK.reset(legacy)
                TASK_AGENT.reset(token)

    def _approval_end(self, rec: GatewayTask, final: dict[str, Any], status: str = "completed") -> None:
        rec.final = final
        rec.task = {**rec.task, "status": status, "lastUpdatedAt": iso_ts(time.time())}
        rec.task.pop("statusMessage", None)
        rec.expires = time.monotonic() + 600.0
        self._approval_note(rec)

    def _approval_stop(self, rec: GatewayTask) -> bool:
        """Stop a gateway-hosted approval task; True when its RESULT is still to be written by the caller.

        While the person has not decided, the wait is withdrawn; once the call was forwarded it runs to
        its end (the forward writes its RESULT) and only its result is withheld.
        """
        if rec.forwarding:
            return False
        if rec.scope is not None:
            rec.scope.cancel()
        rec.task = {**rec.task, "status": "cancelled", "lastUpdatedAt": iso_ts(time.time())}
        if not rec.modern:
            rec.task["statusMessage"] = "the approval wait was withdrawn; the call was not forwarded"
        rec.final = {}
        self._forget_later(rec)
        self._approval_note(rec)
        return rec.open

    def _approval_cancel(self, rec: GatewayTask) -> None:
        """The agent's ``tasks/cancel`` of a running approval task: the wait withdrawn (once forwarded: no-op)."""
        if self._approval_stop(rec):
            self._record_end(
                rec,
                "blocked",
                "approval wait withdrawn by the agent (tasks/cancel)",
                trigger=Trigger.APPROVAL_REQUIRED,
            )

    def _approval_note(self, rec: GatewayTask) -> None:
        """A state change of an approval task: a waiting ``tasks/result`` is woken at its end; a 2025-11-25
        agent gets ``notifications/tasks/status`` (2026-07-28 agents poll)."""
        if rec.ended is not None and rec.status in TERMINAL:
            rec.ended.set()
        if rec.modern or self.notify is None or rec.session.state.state == SessionStatus.ENDED:
            return
        with contextlib.suppress(Exception):
            self.notify(
                rec.session,
                {"jsonrpc": "2.0", "method": "notifications/tasks/status", "params": dict(rec.task)},
            )

    async def _approval_result(self, rec: GatewayTask) -> dict[str, Any]:
        """2025-11-25 ``tasks/result`` of an approval task: waits for its end, then what the call answered."""
        assert rec.ended is not None
        bound = self.gateway.options.approval_timeout + rec.timeout + POLL_TIMEOUT
        with anyio.move_on_after(bound):
            await rec.ended.wait()
        await self._admit(rec)  # halted meanwhile: the halt's refusal, nothing of the call
        if not rec.ended.is_set():
            raise TaskError(types.INTERNAL_ERROR, f"the task did not end within {bound:g}s; ask again")
        final = rec.final or {}
        if "error" in final:
            error = final["error"]
            raise TaskError(
                error.get("code", types.INTERNAL_ERROR), str(error.get("message", "")), error.get("data")
            )
        if "result" in final:
            answer = copy.deepcopy(final["result"])
        else:  # withdrawn before a person decided
            answer = error_result(
                "MCP call withdrawn: the approval wait was cancelled; the call was not forwarded."
            )
        answer.setdefault("_meta", {})[RELATED_TASK] = {"taskId": rec.id}
        return answer

    # helpers

    def _seen(self, rec: GatewayTask, upstream_task: dict[str, Any]) -> None:
        """An upstream task state (tasks/get, cancel, a notification): kept, and a failure/cancel ends it."""
        if rec.refusal is not None:
            return
        fields = {k: v for k, v in upstream_task.items() if k not in ("_meta", "resultType")}
        rec.task = {**rec.task, **self._translate(rec, fields)}
        status = rec.status
        if status in ("failed", "cancelled") and rec.open:
            why = rec.task.get("statusMessage") or status
            self._record_end(rec, "fail", f"task {status} upstream: {why}"[:300])

    def _record_end(self, rec: GatewayTask, status: str, summary: str, *, trigger: Any = None) -> None:
        sess = rec.session
        sess.spool.result(
            rec.intent,
            status=status,
            result_summary=summary[:300],
            nbytes=0,
            duration_ms=self._ms(rec),
            trigger=trigger,
        )
        outcome = f"{status} ({trigger})" if trigger else f"{status} ({summary[:80]})"
        sess.state.record_outcome(
            CallRecord(rec.intent["ts"], rec.call.server, rec.call.tool, rec.intent["args_summary"], outcome)
        )

    @staticmethod
    def _ms(rec: GatewayTask) -> float:
        return (time.perf_counter() - rec.started) * 1000

    def _translate(self, rec: GatewayTask, data: dict[str, Any]) -> dict[str, Any]:
        """A copy of an upstream answer with the upstream's task id replaced by the agent's, wherever it shows."""
        out = copy.deepcopy(data)
        if out.get("taskId") == rec.upstream_id:
            out["taskId"] = rec.id
        meta = out.get("_meta")
        if isinstance(meta, dict) and isinstance(meta.get(RELATED_TASK), dict):
            meta[RELATED_TASK] = {**meta[RELATED_TASK], "taskId": rec.id}
        return out

    def _forget(self, rec: GatewayTask) -> None:
        self.tasks.pop(rec.id, None)
        if rec.upstream is not None:
            self.by_upstream.pop((rec.upstream.slug, rec.upstream_id), None)


class StdioTasks:
    """Task messages taken off the stdio wire before the SDK sees them (one agent session: ``stdio``)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.registry = gateway.tasks
        self.enabled = False  # once the legacy handshake completed
        self.wire: Any = None  # asyncio.StreamWriter
        self._pending: set[Any] = set()
        self.registry.served = True
        self.registry.notify = self._notify

    def intercept(self, line: bytes) -> bool:
        if not self.enabled or (b'"tasks/' not in line and b'"task"' not in line):
            return False
        try:
            msg = json.loads(line)
        except ValueError:
            return False
        if not is_task_message(msg):
            return False
        task = asyncio.get_running_loop().create_task(self._answer(msg))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    async def _answer(self, msg: dict[str, Any]) -> None:
        gw = self.gateway
        sess = gw.sessions.get("stdio") or gw.open_session("stdio")
        self._write(await self.registry.handle(sess, msg))

    def _notify(self, sess: AgentSession, note: dict[str, Any]) -> None:
        if self.gateway.sessions.get("stdio") is sess:
            self._write(note)

    def _write(self, msg: dict[str, Any]) -> None:
        if self.wire is not None:
            with contextlib.suppress(Exception):
                self.wire.write(
                    json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
                )
