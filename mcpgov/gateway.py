"""The gateway's call path: one MCP server for the agent, an MCP client to every upstream, the bundle in between.

Call path per ``tools/call``: decision (pure) → audit INTENT (durable) → forward with the execution
timeout → audit RESULT → post-call checks. Refused calls are never forwarded. See ``docs/gateway.md``.
The portal conversation is :mod:`mcpgov.control`, process start-up and transports :mod:`mcpgov.serve`,
the stdio fast path :mod:`mcpgov.fast_stdio`.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from anyio.abc import TaskGroup
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types.methods import is_input_required

from mcpgov import __version__
from mcpgov.audit import DURABILITY_INTENT, RESULT_PAYLOAD_LIMIT, AuditSpool, ShipperThread, read_end_marker
from mcpgov.bundle import Trigger, tool_definition_hash
from mcpgov.bundle_manager import BundleManager
from mcpgov.config import UpstreamConfig
from mcpgov.control import AgentSession, SessionControl, shipper_thread
from mcpgov.decision import (
    Decision,
    Policy,
    ToolCall,
    Verdict,
    check_result,
    compile_policy,
    decide,
    iso_ts,
    result_rows,
)
from mcpgov.discover import report_session_tools
from mcpgov.identity import (
    ROLE_META_KEY,
    RUN_META_KEY,
    AgentIdentity,
    TokenRejected,
    check_role,
    local_identity,
)
from mcpgov.mrtr import FlightRound, Rounds, agent_rounds
from mcpgov.portal_client import PortalClient
from mcpgov.redact import redact_text
from mcpgov.session import CallRecord, SessionState, SessionStatus, call_resource
from mcpgov.shadow import Shadow
from mcpgov.surface import (
    LIST_TTL_MS,
    REVOKED_MESSAGE,
    GatewayServer,
    Surface,
    error_result,
    exposed_name,
    prefix_resource_uris,
    result_size,
    retry_params,
    split_name,
)
from mcpgov.tasks import TaskError, TaskRegistry, task_agent
from mcpgov.tracing import CallObservation, CallObserver, call_context, on_result, on_state_change
from mcpgov.upstream import Upstream, UpstreamClosed, UpstreamError, UpstreamTimeout
from mcpgov.verify import VerifiedBundle

log = logging.getLogger("mcpgov.gateway")


def end_session_record(sess: AgentSession, reason: str) -> None:
    """Record a session's end in its spool: open INTENTs get an honest RESULT, the end marker keeps a halt."""
    st = sess.state
    if read_end_marker(sess.spool.dir, sess.id) is not None:
        return
    trigger = st.trigger if st.state in (SessionStatus.HALTED, SessionStatus.PAUSED) else None
    sess.spool.close_open_intents("the gateway stopped during the call")
    sess.spool.mark_end(reason, trigger=trigger, last_calls=[c.as_dict() for c in st.last_calls])
    st.end(reason)


@dataclass
class GatewayOptions:
    environment: str
    role: str
    read_only: bool = True
    declared_large_data: bool = False
    spool_dir: Path = Path("var/mcpgov/spool")
    agent: str = ""
    default_timeout: float = 120.0
    approval_timeout: float = 300.0
    upstream_mode: str = "legacy"
    durability: str = DURABILITY_INTENT
    human_log: str | None = None
    bundle_file: str | None = None
    # HTTP with auth: every request must carry an agent credential (set by serve_http)
    require_agent: bool = False


ROLE_REFUSED = -32003  # JSON-RPC server error: the credential does not allow this role or environment


@dataclass
class ExposedTool:
    name: str
    server: str
    tool: str
    upstream: Upstream
    definition: types.Tool  # renamed for the agent
    definition_ok: bool = True
    reason: str = ""


SUMMARY_CHARS = 200  # characters of result text in a RESULT's one-line summary


def result_text(result: dict[str, Any], limit: int) -> str:
    parts = []
    size = 0
    for c in result.get("content") or ():
        text = c.get("text")
        if text is None:
            text = f"<{c.get('type', 'content')}>"
        parts.append(text)
        size += len(text)
        if size >= limit:
            break
    return "\n".join(parts)[:limit]


class Gateway:
    def __init__(
        self,
        options: GatewayOptions,
        bundles: BundleManager,
        upstream_configs: dict[str, UpstreamConfig],
        portal: PortalClient | None = None,
    ) -> None:
        self.options = options
        self.bundles = bundles
        self.portal = portal
        self.upstreams = {
            slug: Upstream(cfg, options.upstream_mode) for slug, cfg in upstream_configs.items()
        }
        self.index: dict[str, ExposedTool] = {}
        self.unknown_reported: set[str] = set()
        self.sessions: dict[str, AgentSession] = {}
        self.in_flight = 0  # tools/call executions in progress (a lone call syncs its INTENT in place)
        self.tg: TaskGroup | None = None
        self.stop_reason = "gateway stopped"  # what the end report of the sessions open at the stop says
        self.shipper: ShipperThread | None = None
        self.control = SessionControl(portal) if portal is not None else None
        # a draft the portal publishes as a shadow bundle is decided beside this one, never enforced
        self.shadow = Shadow(bundles, options.role, portal) if portal is not None else None
        self.verified: VerifiedBundle = bundles.enforced  # type: ignore[assignment]
        self.policy: Policy = compile_policy(self.verified.bundle, options.role)
        bundles.listeners.append(self.on_bundle)
        self.observer = CallObserver(self)  # traces (OTEL_*) and metrics (--metrics): mcpgov.tracing
        self.surface = Surface(self)  # resources, prompts, notifications, server-to-client requests
        self.rounds = Rounds(self)  # 2026-07-28 multi-round-trip requests (InputRequiredResult), governed
        self.surface.start()
        self.tasks = TaskRegistry(self)  # task-augmented calls and tasks/* (mcpgov.tasks)
        self.server = self._build_server()

    # bundle changes

    def on_bundle(self, verified: VerifiedBundle) -> None:
        flags_only = verified.sha256 == self.verified.sha256  # a flags update on the same signed bundle
        self.verified = verified
        self.policy = compile_policy(verified.bundle, self.options.role)
        if flags_only:
            # flags decide calls, not what is listed: no re-listing, the next call sees them
            log.warning("now enforcing bundle v%d with flags r%d", verified.version, verified.flags_revision)
            return
        self.rebuild_index()
        log.warning("now enforcing bundle v%d", verified.version)
        self.tasks.nudge()  # a flag turned off stops the tasks it covers
        if self.tg is not None:
            self.tg.start_soon(self._bundle_changed)

    async def _bundle_changed(self) -> None:
        """A new bundle: list the upstreams' tools again (re-pin), then tell agents whose lists changed."""
        for up in self.upstreams.values():
            if up.session is not None:
                with contextlib.suppress(Exception):
                    await up.list_tools()
        self.rebuild_index()
        await self.surface.announce()

    def rebuild_index(self) -> None:
        bundle = self.verified.bundle
        index: dict[str, ExposedTool] = {}
        new_unknown: list[str] = []
        for slug, up in self.upstreams.items():
            spec = bundle.servers.get(slug)
            for tool in up.tools:
                name = exposed_name(slug, tool.name)
                pinned = spec.tools.get(tool.name) if spec else None
                ok, reason = True, ""
                if pinned is not None and pinned.definition_hash is not None:
                    live = tool_definition_hash(tool.name, tool.description, tool.input_schema)
                    if live != pinned.definition_hash:
                        ok = False
                        reason = f"definition hash {live[:12]}… differs from the approved {pinned.definition_hash[:12]}…"
                old = self.index.get(name)
                if not ok and (old is None or old.definition_ok):
                    self.report_definition_change(slug, tool.name, reason)
                index[name] = ExposedTool(
                    name, slug, tool.name, up, tool.model_copy(update={"name": name}), ok, reason
                )
                unknown = spec is None or (pinned is None and spec.allow_unknown_tools == "deny")
                if unknown and name not in self.index and name not in self.unknown_reported:
                    new_unknown.append(name)
        self.index = index
        if new_unknown:
            # hidden and refused until approved; reported with its definition for an admin to classify
            log.error("HIDDEN unknown tool(s), reported for review: %s", ", ".join(new_unknown))
            self.unknown_reported.update(new_unknown)
            if self.portal is not None and self.tg is not None and self.sessions:
                self.tg.start_soon(report_session_tools, self.portal, self.upstreams)

    def report_definition_change(self, server: str, tool: str, reason: str) -> None:
        log.error("HIDDEN tool %s.%s: %s", server, tool, reason)
        for sess in self.sessions.values():
            intent = sess.spool.intent(
                call_id=str(uuid.uuid4()),
                server=server,
                tool=tool,
                arguments={},
                bundle_version=self.verified.version,
                trigger=Trigger.TOOL_DEFINITION_CHANGED,
            )
            sess.spool.result(
                intent,
                status="blocked",
                result_summary=f"tool hidden: {reason}",
                nbytes=0,
                duration_ms=0.0,
                trigger=Trigger.TOOL_DEFINITION_CHANGED,
            )

    def visible(self, ex: ExposedTool, sess: AgentSession | None = None) -> bool:
        """Listed for this session: approved definition, server allowed and bound, usable in its scope.

        A hidden name can still be called: the call goes through :func:`decide` and fires its trigger.
        """
        if not ex.definition_ok:
            return False
        rule = self.policy.rule(ex.server)
        if rule.role_violation is not None or rule.env_violation is not None:
            return False
        if rule.unknown_denied and ex.tool not in rule.tools:
            return False
        scoped_out = sess is not None and (sess.state.read_only or rule.binding_read_only)
        return not (scoped_out and rule.tool(ex.tool).is_write)

    # sessions

    def open_session(self, key: str, identity: AgentIdentity | None = None, run_id: str = "") -> AgentSession:
        sid = str(uuid.uuid4())
        o = self.options
        identity = identity or local_identity(o.agent)
        state = SessionState(
            session_id=sid, role=o.role, read_only=o.read_only, declared_large_data=o.declared_large_data
        )
        meta = {
            "id": sid,
            "role": o.role,
            "read_only": o.read_only,
            "declared_large_data": o.declared_large_data,
            "agent": identity.as_meta(),
            "run_id": run_id or sid,
            "started_at": iso_ts(time.time()),
            "bundle_version": self.verified.version,
        }
        spool = AuditSpool(o.spool_dir, sid, durability=o.durability, meta=meta, human_log=o.human_log)
        if self.shipper is not None:
            spool.listeners.append(self.shipper.nudge)
        spool.on_result = on_result
        sess = AgentSession(state=state, spool=spool, run_id=run_id or sid, agent=identity)
        self.sessions[key] = sess
        log.warning(
            "session %s started: role=%s environment=%s read_only=%s declared_large_data=%s bundle=v%d",
            sid,
            o.role,
            o.environment,
            o.read_only,
            o.declared_large_data,
            self.verified.version,
        )
        if self.control is not None and self.tg is not None:
            self.tg.start_soon(self.control.open, sess, meta)
            self.tg.start_soon(self.control.follow, sess)
            self.tg.start_soon(report_session_tools, self.control.portal, self.upstreams)
        return sess

    def session_for(self, ctx: ServerRequestContext[Any]) -> AgentSession:
        """The governance session of this request: (authenticated agent, run id), never the transport.

        Run id: the client's ``_meta["io.mcpgov/run"]``, else the trace id of ``_meta.traceparent``,
        else the legacy ``Mcp-Session-Id``, else the agent's default run on this gateway (minted once;
        returned in ``_meta["io.mcpgov/run"]`` of every answer so the client can reuse or vary it).
        Raises :class:`MCPError` when the credential does not allow the role or environment.
        """
        request = ctx.request
        if request is None:  # stdio: one process, one agent (the OS user), one run
            return self.sessions.get("stdio") or self.open_session("stdio")
        identity: AgentIdentity | None = None
        headers = getattr(request, "headers", None) if request is not None else None
        if request is not None:
            user = request.scope.get("user") if hasattr(request, "scope") else None
            token = getattr(user, "access_token", None)
            if token is not None and token.claims:
                identity = token.claims.get("mcpgov_identity")
        if identity is None:
            o_agent = self.options.agent
            if self.options.require_agent:
                raise MCPError(ROLE_REFUSED, "no authenticated agent on this request")
            identity = AgentIdentity("http", o_agent or "unauthenticated-loopback", "local")
        meta = ctx.meta or {}
        requested = meta.get(ROLE_META_KEY)
        try:
            check_role(
                identity,
                role=self.options.role,
                environment=self.options.environment,
                requested=str(requested) if requested is not None else None,
            )
        except TokenRejected as exc:
            log.warning("refused agent %s: %s", identity.slug, exc)
            raise MCPError(ROLE_REFUSED, f"MCP call refused ({exc.code}): {exc.message}") from exc
        run = meta.get(RUN_META_KEY)
        if not run:
            traceparent = meta.get("traceparent")
            if isinstance(traceparent, str) and traceparent.count("-") == 3:
                run = "trace:" + traceparent.split("-")[1]
        if not run and headers is not None:
            run = headers.get("mcp-session-id")
        run = str(run)[:200] if run else ""
        key = f"{identity.key}|{run or '*'}"
        sess = self.sessions.get(key)
        if sess is None:
            sess = self.open_session(key, identity, run)
        sess.last_active = time.monotonic()
        return sess

    async def close_sessions(self, *, deliver_within: float = 10.0) -> None:
        """End every session: recorded in its spool first, then delivered with its events (bounded).

        What the portal does not take within ``deliver_within`` stays in the spool with its end record;
        the next gateway on this spool delivers it (restart recovery, :class:`mcpgov.audit.Shipper`).
        """
        reason = self.stop_reason
        for sess in list(self.sessions.values()):
            end_session_record(sess, reason)
        if self.shipper is not None and self.sessions and not await self.shipper.drain(deliver_within):
            log.error(
                "the portal did not take every event and end report within %.0fs; they stay in %s",
                deliver_within,
                self.options.spool_dir,
            )
        for sess in list(self.sessions.values()):
            sess.spool.close()
        self.sessions.clear()

    # MCP handlers

    def _build_server(self) -> Server[Any]:
        server: Server[Any] = GatewayServer(
            "mcpgov-gateway",
            version=__version__,
            instructions="MCP governance gateway: tools are named <server>__<tool>; every call is checked against "
            "the signed policy bundle and audited.",
            on_list_tools=self.handle_list_tools,
            on_call_tool=self.handle_call_tool,
            get_tool_input_schema=self.input_schema,
        )
        server.middleware = []  # no per-message tracing span on the hot path
        server.tasks_capability = self.tasks.capability  # type: ignore[attr-defined]
        server.tasks_extension = self.tasks.extension  # type: ignore[attr-defined]
        self.surface.register(server)
        self.tasks.register(server)
        return server

    def input_schema(self, name: str) -> dict[str, Any] | None:
        ex = self.index.get(name)
        return ex.definition.input_schema if ex is not None else None

    async def handle_list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        sess = self.surface.session(ctx)
        for up in self.upstreams.values():
            # an upstream that announces list changes is listed at connect, on its list_changed and on a
            # new bundle (cached in between); one that does not is asked again at every tools/list
            if up.session is not None and not up.announces_tool_changes:
                try:
                    await up.list_tools()
                except Exception as exc:
                    log.error("tools/list on upstream %s failed: %s", up.slug, exc)
        self.rebuild_index()
        tools = [ex.definition for ex in self.index.values() if self.visible(ex, sess)]
        sess.listed_tools = frozenset(t.name for t in tools)
        return types.ListToolsResult(
            tools=tools,
            ttl_ms=LIST_TTL_MS,
            cache_scope="private",
            _meta={RUN_META_KEY: sess.run_id} if ctx.request is not None else None,
        )

    async def handle_call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult | dict[str, Any]:
        """The SDK path (HTTP, or stdio when the fast path does not apply)."""
        sess = self.surface.session(ctx)
        retry = retry_params(params)
        try:
            with self.surface.caller(ctx, sess), agent_rounds(ctx), task_agent(ctx):
                raw = await self.execute(
                    sess, params.name, params.arguments, rounds=retry, **call_context(ctx)
                )
        except UpstreamError as exc:
            raise MCPError(exc.code, str(exc.error.get("message", "")), exc.error.get("data")) from exc
        except TaskError as exc:
            raise MCPError(exc.error["code"], exc.error["message"], exc.error.get("data")) from exc
        if raw.get("resultType") == "task":
            # a 2026-07-28 CreateTaskResult (mcpgov.tasks): the extension's shape, not a CallToolResult
            if ctx.request is not None:
                raw["_meta"] = {**(raw.get("_meta") or {}), RUN_META_KEY: sess.run_id}
            return raw
        result = (
            types.InputRequiredResult.model_validate(raw)
            if is_input_required(raw)
            else types.CallToolResult.model_validate(raw)
        )
        if ctx.request is None:  # stdio: one run, nothing to name (and the fast path's answers match)
            return result
        meta = dict(result.meta or {})
        meta[RUN_META_KEY] = sess.run_id
        return result.model_copy(update={"meta": meta})

    async def execute(
        self,
        sess: AgentSession,
        name: str,
        arguments: dict[str, Any] | None,
        *,
        meta: dict[str, Any] | None = None,
        request_id: Any = None,
        transport_session: str | None = None,
        task: dict[str, Any] | None = None,
        rounds: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One tools/call: decision → INTENT → forward → RESULT → post checks. Returns the wire result.

        Raises UpstreamError for a JSON-RPC error to pass back to the agent unchanged. ``meta`` is the
        request's ``_meta`` (trace context), the rest labels the call's span (:mod:`mcpgov.tracing`).
        ``task``: the agent's task augmentation (:mod:`mcpgov.tasks`); when the upstream answers with a
        task, the answer is the agent's ``CreateTaskResult`` and the RESULT waits for the task's end.
        ``rounds``: the agent's ``inputResponses`` / ``requestState``: the retry of a call that asked for
        input, continued under its first decision (:mod:`mcpgov.mrtr`).
        """
        if self.portal is not None and self.portal.revoked:
            # kill switch: nothing is forwarded, nothing new is spooled (the portal takes no new
            # events from a revoked client beyond those already recorded); said loudly here
            log.error("REFUSED %s: enforcement client revoked", name)
            return error_result(REVOKED_MESSAGE)
        self.in_flight += 1
        try:
            with self.observer.call(
                sess, name, meta=meta, request_id=request_id, transport_session=transport_session
            ) as obs:
                if rounds is not None:
                    return await self.rounds.resume(sess, name, arguments, rounds, obs)
                return await self._execute(sess, name, arguments, obs, task)
        finally:
            self.in_flight -= 1

    def call_of(self, name: str, arguments: dict[str, Any] | None) -> tuple[ExposedTool | None, ToolCall]:
        """The exposed tool (if listed) and the call the decision sees; a name without ``__`` is -32602."""
        ex = self.index.get(name)
        if ex is not None:
            return ex, ToolCall(ex.server, ex.tool, arguments, not ex.definition_ok)
        parts = split_name(name)
        if parts is None:
            raise UpstreamError(
                {
                    "code": types.INVALID_PARAMS,
                    "message": f"Unknown tool: {name} (tools are named <server>__<tool>)",
                }
            )
        return None, ToolCall(parts[0], parts[1], arguments)

    async def _execute(
        self,
        sess: AgentSession,
        name: str,
        arguments: dict[str, Any] | None,
        obs: CallObservation,
        task: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        _, call = self.call_of(name, arguments)
        state = sess.state
        now = time.time()
        policy = self.policy
        decision = decide(policy, state, call, now)
        obs.decided(decision)
        shadow = (
            self.shadow.verdict(state, call, now, forwarded=decision.verdict != Verdict.REFUSE)
            if self.shadow is not None
            else None
        )
        spool = sess.spool
        intent = spool.intent(
            call_id=str(uuid.uuid4()),
            server=call.server,
            tool=call.tool,
            arguments=arguments,
            bundle_version=policy.version,
            now=now,
            trigger=Trigger.APPROVAL_REQUIRED if decision.verdict == Verdict.APPROVAL else None,
            trace_id=obs.trace_id,
            defer_sync=True,
            shadow=shadow,
        )
        if decision.verdict != Verdict.ALLOW:
            if decision.verdict == Verdict.APPROVAL:
                if self.tasks.approval_as_task(sess):  # a 2026-07-28 agent with tasks: a gateway task
                    return await self.tasks.approval_task(sess, intent, name, call, decision)
                if self.rounds.approval_as_round(sess):  # a 2026-07-28 agent: asked again, not held open
                    return await self.rounds.approval_round(sess, intent, name, call, decision)
                decision = await self._await_approval(sess, intent, call, decision)
            if decision.verdict == Verdict.REFUSE:
                return self._refuse(sess, intent, call, decision, now)
        return await self.forward(sess, intent, name, call, decision.timeout, obs, now=now, task=task)

    async def forward(
        self,
        sess: AgentSession,
        intent: dict[str, Any],
        name: str,
        call: ToolCall,
        timeout: float | None,
        obs: CallObservation,
        *,
        now: float | None = None,
        rounds: dict[str, Any] | None = None,
        round_no: int = 1,
        relay: Any = None,
        task: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Forward an allowed call and record its outcome; ``now`` set: the call counts (its first round).

        A retry of a call that asked for input (``rounds``) does not count again: it is the same call.
        ``relay``: the retry of a call still in flight upstream (:class:`mcpgov.mrtr.Flight`), awaited instead.
        """
        ex = self.index.get(name)
        arguments = call.arguments
        policy = self.policy
        state, spool = sess.state, sess.spool
        upstream = ex.upstream if ex is not None else self.upstreams.get(call.server)
        seq = intent["seq"]
        flight = (
            self.rounds.flight(sess, intent, upstream) if upstream is not None and relay is None else None
        )
        # never forwarded before its INTENT is on disk: calls in flight together share a group commit;
        # the only call in flight starts its INTENT's data on the way to the disk now and syncs in place
        # right before its request is written to the upstream, so the disk works while the request is
        # prepared (``ready``, called by the upstream channel before it sends anything)
        in_place = (
            self.in_flight == 1
            and flight is None
            and relay is None
            and upstream is not None
            and spool.lone_commit(seq)
        )
        if in_place:
            spool.write_back()
        if now is not None:
            tool_rule = policy.rule(call.server).tool(call.tool)
            state.record_forwarded(
                call.server, tool_rule.is_write, call_resource(call.server, arguments), now
            )
        timeout = timeout or self.options.default_timeout
        if not in_place:
            await spool.commit(seq, alone=self.in_flight == 1)
        t0 = time.perf_counter()

        def ready() -> None:
            nonlocal t0
            spool.commit_in_place(seq)
            t0 = time.perf_counter()  # the call's duration starts once it may leave, as without ready

        try:
            if upstream is None:
                raise UpstreamClosed(f"server {call.server} is not configured on this gateway")
            if relay is not None:
                result = await relay()
            elif flight is not None:
                result = await flight.start(
                    lambda: obs.forward(upstream, call.tool, arguments, timeout, rounds=rounds)
                )
            else:
                result = await obs.forward(
                    upstream,
                    call.tool,
                    arguments,
                    timeout,
                    task=task,
                    rounds=rounds,
                    ready=ready if in_place else None,
                )
            if isinstance(
                result, FlightRound
            ):  # the upstream asked mid-call: the agent is asked, the call goes on
                return result.answer
        except (UpstreamClosed, UpstreamTimeout, UpstreamError) as exc:
            summary = self._forward_failed(sess, intent, call, exc, (time.perf_counter() - t0) * 1000)
            if isinstance(exc, UpstreamError):
                raise
            return error_result(f"MCP call failed: {summary} (recorded as status=fail; not retried)")
        except anyio.get_cancelled_exc_class():
            with contextlib.suppress(Exception):  # a spool closed by the session's end meanwhile
                self._forward_failed(sess, intent, call, None, (time.perf_counter() - t0) * 1000)
            raise
        ms = (time.perf_counter() - t0) * 1000
        if task is not None and isinstance(result.get("task"), dict):
            return self.tasks.created(sess, intent, call, upstream, result, timeout=timeout, started=t0)
        if result.get("resultType") == "task":  # a 2026-07-28 upstream made a task of the call
            return await self.tasks.created_ext(
                sess, intent, call, upstream, result, timeout=timeout, started=t0
            )
        if is_input_required(result):  # a 2026-07-28 upstream asks the agent's side first
            return await self.rounds.upstream_asked(
                sess, intent, name, call, upstream, result, ms, round_no, obs, timeout
            )
        return self.complete_call(sess, intent, call, result, ms)

    def complete_call(
        self, sess: AgentSession, intent: dict[str, Any], call: ToolCall, result: dict[str, Any], ms: float
    ) -> dict[str, Any]:
        """A forwarded call's answer: post checks (withheld + halt over a limit), then its RESULT."""
        state = sess.state
        policy = self.policy
        spool = sess.spool
        nbytes = result_size(result)
        post = check_result(
            policy, state, call, result_bytes=nbytes, rows=result_rows(result.get("structuredContent"))
        )
        if post is not None:
            return error_result(self._withhold(sess, intent, call, post, nbytes, ms))
        content = result.get("content")
        if content:  # a link to follow names the server, as every URI the agent reads does
            prefix_resource_uris(call.server, content)
        text = result_text(result, RESULT_PAYLOAD_LIMIT)
        status = "fail" if result.get("isError") else "success"
        redacted = redact_text(text)
        if not text:
            summary = f"{nbytes} bytes"
        elif len(text) <= SUMMARY_CHARS and "\n" not in text:  # the summary is the text: scanned once
            summary = redacted
        else:
            summary = redact_text(text[:SUMMARY_CHARS].replace("\n", " "))
        spool.result(
            intent,
            status=status,
            result_summary=summary,
            nbytes=nbytes,
            duration_ms=ms,
            result={"text": redacted, "is_error": status == "fail"},
        )
        state.record_outcome(CallRecord(intent["ts"], call.server, call.tool, intent["args_summary"], status))
        return result

    def _forward_failed(
        self, sess: AgentSession, intent: dict[str, Any], call: ToolCall, exc: Exception | None, ms: float
    ) -> str:
        """RESULT ``fail`` of a forwarded call that got no answer (``exc`` None: cancelled); returns the summary."""
        if exc is None:
            summary = "cancelled before the upstream answered (by the agent, or the gateway stopped)"
        elif isinstance(exc, UpstreamError):
            summary = f"error {exc.code}: {exc.error.get('message', '')}"
        else:
            summary = str(exc)
        sess.spool.result(intent, status="fail", result_summary=summary, nbytes=0, duration_ms=ms)
        sess.state.record_outcome(
            CallRecord(intent["ts"], call.server, call.tool, intent["args_summary"], f"fail ({summary})")
        )
        return summary

    def _withhold(
        self,
        sess: AgentSession,
        intent: dict[str, Any],
        call: ToolCall,
        post: Decision,
        nbytes: int,
        ms: float,
    ) -> str:
        """RESULT ``blocked`` of a result over a limit: withheld, the session halts; returns the agent's message."""
        sess.spool.result(
            intent,
            status="blocked",
            result_summary=f"result withheld ({nbytes} bytes)",
            nbytes=nbytes,
            duration_ms=ms,
            trigger=post.trigger,
        )
        sess.state.record_outcome(
            CallRecord(
                intent["ts"],
                call.server,
                call.tool,
                intent["args_summary"],
                f"blocked ({post.trigger}, result withheld)",
            )
        )
        self._apply_state(sess, post)
        return post.message

    def _record_blocked(
        self,
        sess: AgentSession,
        intent: dict[str, Any],
        server: str,
        tool: str,
        summary: str,
        trigger: Trigger | None,
        now: float,
    ) -> None:
        """RESULT ``blocked`` of a refused call (never forwarded), and its line in the last calls."""
        sess.spool.result(
            intent,
            status="blocked",
            result_summary=summary[:300],
            nbytes=0,
            duration_ms=0.0,
            trigger=trigger,
            now=now,
        )
        sess.state.record_outcome(
            CallRecord(intent["ts"], server, tool, intent["args_summary"], f"blocked ({trigger})")
        )

    def _refuse(
        self, sess: AgentSession, intent: dict[str, Any], call: ToolCall, decision: Decision, now: float
    ) -> dict[str, Any]:
        self._record_blocked(
            sess, intent, call.server, call.tool, decision.message.splitlines()[0], decision.trigger, now
        )
        self._apply_state(sess, decision)
        log.warning("BLOCKED %s.%s: %s", call.server, call.tool, decision.message.splitlines()[0])
        return error_result(decision.message)

    def _apply_state(self, sess: AgentSession, decision: Decision) -> None:
        st = sess.state
        if decision.new_state == SessionStatus.HALTED:
            st.halt(decision.trigger, decision.reason)
        elif decision.new_state == SessionStatus.PAUSED:
            st.pause(decision.pause_key or "", decision.reason)
        else:
            return
        on_state_change(self.observer.metrics, st.state, decision.trigger)
        log.error("session %s %s (trigger %s)", st.session_id, st.state, decision.trigger)
        self.tasks.nudge()  # a halted session's tasks are cancelled upstream
        sess.spool.flush()
        if self.tg is not None and self.control is not None:
            self.tg.start_soon(self.control.report_state, sess, decision.trigger, decision.reason)

    async def _await_approval(
        self, sess: AgentSession, intent: dict[str, Any], call: ToolCall, decision: Decision
    ) -> Decision:
        if self.portal is None:
            return Decision(
                Verdict.REFUSE,
                Trigger.APPROVAL_REQUIRED,
                decision.message + "\nNo portal is configured to ask a person "
                "for approval (offline mode), so the call is refused.",
            )
        event, answer = anyio.Event(), []
        sess.approvals[intent["call_id"]] = (event, answer)
        if self.shipper is not None:
            self.shipper.nudge()
        log.warning("call %s (%s.%s) waits for approval", intent["call_id"], call.server, call.tool)
        try:
            with anyio.move_on_after(self.options.approval_timeout):
                await event.wait()
        finally:
            sess.approvals.pop(intent["call_id"], None)
        if answer and answer[0] == "approve":
            return Decision(Verdict.ALLOW, timeout=decision.timeout)
        why = f"denied by {answer[1]}" if answer else f"no decision within {self.options.approval_timeout:g}s"
        return Decision(Verdict.REFUSE, Trigger.APPROVAL_REQUIRED, f"{decision.message}\nApproval {why}.")

    # running

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        """Upstreams connected, background tasks (bundle poll, shipper, supervisors) running."""
        async with anyio.create_task_group() as tg:
            self.tg = tg
            if self.portal is not None:
                assert self.control is not None
                self.shipper = shipper_thread(self.portal, self.options.spool_dir)
                # restart recovery: sessions a stopped gateway left in this spool are delivered and ended
                # before this one serves (one bounded pass; the shipper keeps trying if the portal is away)
                with anyio.move_on_after(10), contextlib.suppress(Exception):
                    await self.shipper.ship_all()
                self.shipper.run()
                tg.start_soon(self.bundles.run)
                if self.shadow is not None:  # a shadow already published is evaluated from the first call
                    with anyio.move_on_after(5), contextlib.suppress(Exception):
                        await self.shadow.refresh()
                    tg.start_soon(self.shadow.run)
            elif self.options.bundle_file:
                tg.start_soon(self._watch_bundle_file, Path(self.options.bundle_file))
            tg.start_soon(self._flush_spools)
            tg.start_soon(self.tasks.run)
            with anyio.fail_after(60):
                for up in self.upstreams.values():
                    await tg.start(up.run)
            self.rebuild_index()
            try:
                yield self
            finally:
                with anyio.CancelScope(shield=True):
                    await self.close_sessions()
                    if self.shipper is not None:
                        await anyio.to_thread.run_sync(self.shipper.stop)
                tg.cancel_scope.cancel()

    async def _flush_spools(self) -> None:
        """RESULTs written since the last fsync, and the human-readable logs, reach the disk within 0.5 s."""
        while True:
            await anyio.sleep(0.5)
            self.rounds.sweep(time.time())  # rounds the agent never retried: their INTENTs closed at expiry
            for sess in list(self.sessions.values()):
                with contextlib.suppress(OSError, ValueError):
                    await sess.spool.flush_async()

    async def _watch_bundle_file(self, path: Path) -> None:
        """Offline mode: a re-signed bundle file dropped in place is verified and applied within a second."""
        last = path.stat().st_mtime_ns if path.exists() else 0
        while True:
            await anyio.sleep(0.25)
            try:
                mtime = path.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if mtime != last:
                last = mtime
                with contextlib.suppress(Exception):  # a rejected bundle is logged loudly and never used
                    self.bundles.load_file(path)
