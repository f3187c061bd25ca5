"""``mcpgov gateway``: one MCP server for the agent, an MCP client to every upstream, the bundle in between.

Call path per ``tools/call``: decision (pure) → audit INTENT (durable) → forward with the execution
timeout → audit RESULT → post-call checks. Refused calls are never forwarded. See ``docs/gateway.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from anyio.abc import TaskGroup
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError

from mcpgov import __version__
from mcpgov.audit import DURABILITY_INTENT, RESULT_PAYLOAD_LIMIT, AuditSpool, Shipper
from mcpgov.bundle import tool_definition_hash
from mcpgov.decision import (
    ALLOW,
    APPROVAL,
    APPROVAL_REQUIRED,
    REFUSE,
    TOOL_DEFINITION_CHANGED,
    Decision,
    Policy,
    ToolCall,
    check_result,
    compile_policy,
    decide,
    iso_ts,
    result_rows,
)
from mcpgov.discover import report_session_tools
from mcpgov.gate import NAME_SEPARATOR, UpstreamConfig, environment_gate, gate_report, load_mcp_config
from mcpgov.portal_client import LONG_POLL_SECONDS, BundleManager, PortalClient, PortalError
from mcpgov.redact import redact_text
from mcpgov.session import ACTIVE, ENDED, HALTED, PAUSED, CallRecord, SessionState, call_resource
from mcpgov.upstream import Upstream, UpstreamClosed, UpstreamError, UpstreamTimeout
from mcpgov.verify import VerifiedBundle

log = logging.getLogger("mcpgov.gateway")

EXIT_GATE_FAILED = 3
EXIT_NO_BUNDLE = 4


def exposed_name(server: str, tool: str) -> str:
    """The name the agent sees: ``<server>__<tool>`` (server slugs may not contain ``__``)."""
    return f"{server}{NAME_SEPARATOR}{tool}"


def split_name(name: str) -> tuple[str, str] | None:
    server, sep, tool = name.partition(NAME_SEPARATOR)
    return (server, tool) if sep and server and tool else None


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


@dataclass
class ExposedTool:
    name: str
    server: str
    tool: str
    upstream: Upstream
    definition: types.Tool  # renamed for the agent
    definition_ok: bool = True
    reason: str = ""


# --- agent sessions --------------------------------------------------------------------------------------------


@dataclass
class AgentSession:
    state: SessionState
    spool: AuditSpool
    opened: anyio.Event = field(default_factory=anyio.Event)
    approvals: dict[str, tuple[anyio.Event, list[str]]] = field(default_factory=dict)
    # the portal's control_version when it recorded our halt/pause: only a later decision releases it
    halt_recorded_at: int | None = None

    @property
    def id(self) -> str:
        return self.state.session_id


def result_size(result: dict[str, Any]) -> int:
    """Bytes of payload the agent would receive: text, binary data, resources; structured content if no text."""
    n = 0
    for c in result.get("content") or ():
        text = c.get("text")
        if text is not None:
            n += len(text) if text.isascii() else len(text.encode("utf-8"))
            continue
        data = c.get("data")
        if data is not None:
            n += len(data)
            continue
        resource = c.get("resource")
        if isinstance(resource, dict):
            n += len(resource.get("text") or resource.get("blob") or "")
    structured = result.get("structuredContent")
    if n == 0 and structured is not None:
        n = len(json.dumps(structured, separators=(",", ":"), default=str))
    return n


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


def error_result(message: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": message}], "isError": True}


class Gateway:
    def __init__(self, options: GatewayOptions, bundles: BundleManager, upstream_configs: dict[str, UpstreamConfig],
                 portal: PortalClient | None = None) -> None:  # fmt: skip
        self.options = options
        self.bundles = bundles
        self.portal = portal
        self.upstreams = {
            slug: Upstream(cfg, options.upstream_mode) for slug, cfg in upstream_configs.items()
        }
        self.index: dict[str, ExposedTool] = {}
        self.sessions: dict[str, AgentSession] = {}
        self.tg: TaskGroup | None = None
        self.shipper: Shipper | None = None
        self.fast_path = False  # set once a legacy-handshake agent is initialized on stdio
        self.wire: asyncio.StreamWriter | None = None
        self._fast_tasks: set[asyncio.Task[None]] = set()
        self.verified: VerifiedBundle = bundles.current  # type: ignore[assignment]
        self.policy: Policy = compile_policy(self.verified.bundle, options.role)
        bundles.listeners.append(self.on_bundle)
        self.server = self._build_server()

    # bundle changes

    def on_bundle(self, verified: VerifiedBundle) -> None:
        self.verified = verified
        self.policy = compile_policy(verified.bundle, self.options.role)
        self.rebuild_index()
        log.warning("now enforcing bundle v%d", verified.version)

    def rebuild_index(self) -> None:
        bundle = self.verified.bundle
        index: dict[str, ExposedTool] = {}
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
        self.index = index

    def report_definition_change(self, server: str, tool: str, reason: str) -> None:
        log.error("HIDDEN tool %s.%s: %s", server, tool, reason)
        for sess in self.sessions.values():
            intent = sess.spool.intent(call_id=str(uuid.uuid4()), server=server, tool=tool, arguments={},
                                       bundle_version=self.verified.version, trigger=TOOL_DEFINITION_CHANGED)  # fmt: skip
            sess.spool.result(intent, status="blocked", result_summary=f"tool hidden: {reason}", nbytes=0,
                              duration_ms=0.0, trigger=TOOL_DEFINITION_CHANGED)  # fmt: skip

    def visible(self, ex: ExposedTool) -> bool:
        if not ex.definition_ok:
            return False
        rule = self.policy.rule(ex.server)
        return rule.role_violation is None and rule.env_violation is None

    # sessions

    def open_session(self, key: str) -> AgentSession:
        sid = str(uuid.uuid4())
        o = self.options
        state = SessionState(
            session_id=sid, role=o.role, read_only=o.read_only, declared_large_data=o.declared_large_data
        )
        meta = {
            "id": sid, "role": o.role, "read_only": o.read_only, "declared_large_data": o.declared_large_data,
            "agent": o.agent, "started_at": iso_ts(time.time()), "bundle_version": self.verified.version,
        }  # fmt: skip
        spool = AuditSpool(o.spool_dir, sid, durability=o.durability, meta=meta, human_log=o.human_log)
        if self.shipper is not None:
            spool.listeners.append(self.shipper.nudge)
        sess = AgentSession(state=state, spool=spool)
        self.sessions[key] = sess
        log.warning(
            "session %s started: role=%s environment=%s read_only=%s declared_large_data=%s bundle=v%d",
            sid, o.role, o.environment, o.read_only, o.declared_large_data, self.verified.version,
        )  # fmt: skip
        if self.portal is not None and self.tg is not None:
            self.tg.start_soon(self._open_remote, sess, meta)
            self.tg.start_soon(self._control_loop, sess)
            self.tg.start_soon(report_session_tools, self.portal, self.upstreams)
        return sess

    def session_for(self, ctx: ServerRequestContext[Any]) -> AgentSession:
        key = "stdio"
        request = ctx.request
        if request is not None:
            headers = getattr(request, "headers", None)
            if headers is not None:
                key = headers.get("mcp-session-id") or "http"
        sess = self.sessions.get(key)
        if sess is None:
            sess = self.open_session(key)
        return sess

    async def close_sessions(self) -> None:
        for sess in list(self.sessions.values()):
            sess.spool.close_open_intents("the gateway stopped during the call")
            sess.state.end("gateway stopped")
            sess.spool.close()
            if self.portal is not None:
                with anyio.move_on_after(3), contextlib.suppress(Exception):
                    await self.portal.patch_session(
                        sess.id, state=ENDED, trigger=None, reason="gateway stopped"
                    )
        self.sessions.clear()

    async def _open_remote(self, sess: AgentSession, meta: dict[str, Any]) -> None:
        assert self.portal is not None
        delay = 0.5
        while True:
            try:
                await self.portal.open_session(meta)
                sess.opened.set()
                return
            except Exception as exc:  # portal down: keep trying; the shipper also opens sessions lazily
                log.warning("cannot open session %s on the portal (%s); retrying", sess.id, exc)
                await anyio.sleep(delay)
                delay = min(30.0, delay * 2)

    async def _report_state(self, sess: AgentSession, trigger: str | None, reason: str) -> None:
        """PATCH the session's new state to the portal (reviewers see it and can release it).

        Retried until the portal has it, as long as the session is still in that state: a halted
        session can only be released once the portal knows it halted.
        """
        if self.portal is None:
            return
        st = sess.state
        reported = st.state
        await sess.opened.wait()
        delay = 0.5
        while st.state == reported:
            try:
                resp = await self.portal.patch_session(st.session_id, state=reported, trigger=trigger, reason=reason,
                                                       last_calls=[c.as_dict() for c in st.last_calls])  # fmt: skip
            except PortalError as exc:
                log.error("portal refused the state of session %s: %s", st.session_id, exc)
                return
            except Exception as exc:
                log.warning("cannot report session %s state (%s); retrying", st.session_id, exc)
                await anyio.sleep(delay)
                delay = min(30.0, delay * 2)
                continue
            if reported in (HALTED, PAUSED) and st.state == reported:
                sess.halt_recorded_at = int(resp.get("control_version") or 0)
            return

    async def _control_loop(self, sess: AgentSession) -> None:
        """Long-poll a person's decisions: release / end, and per-call approvals."""
        assert self.portal is not None
        await sess.opened.wait()
        delay = 0.5
        while sess.state.state != ENDED:
            try:
                resp = await self.portal.control(
                    sess.id, since=sess.state.control_version, wait=LONG_POLL_SECONDS
                )
                delay = 0.5
            except Exception as exc:
                log.warning("control poll for session %s failed (%s)", sess.id, exc)
                await anyio.sleep(delay)
                delay = min(30.0, delay * 2)
                continue
            self.apply_control(sess, resp)

    def apply_control(self, sess: AgentSession, resp: dict[str, Any]) -> None:
        st = sess.state
        version = int(resp.get("control_version") or 0)
        for approval in resp.get("approvals") or ():
            pending = sess.approvals.get(str(approval.get("call_id")))
            if pending is not None:
                pending[1].append(str(approval.get("decision")))
                pending[1].append(f"{approval.get('by') or 'a reviewer'}: {approval.get('reason') or ''}")
                pending[0].set()
        if version <= st.control_version:
            return
        st.control_version = version
        state = resp.get("state")
        if state == ACTIVE and st.state in (HALTED, PAUSED):
            # a decision made before the portal recorded this halt is not a release of it
            if sess.halt_recorded_at is None or version <= sess.halt_recorded_at:
                return
            log.warning(
                "session %s released by %s: %s", st.session_id, resp.get("decided_by"), resp.get("reason")
            )
            sess.halt_recorded_at = None
            st.release()
        elif state == ENDED and st.state != ENDED:
            log.warning("session %s ended by %s", st.session_id, resp.get("decided_by"))
            st.end(str(resp.get("reason") or "ended by a reviewer"))

    # MCP handlers

    def _build_server(self) -> Server[Any]:
        server: Server[Any] = Server(
            "mcpgov-gateway", version=__version__,
            instructions="MCP governance gateway: tools are named <server>__<tool>; every call is checked against "
            "the signed policy bundle and audited.",
            on_list_tools=self.handle_list_tools, on_call_tool=self.handle_call_tool,
            get_tool_input_schema=self.input_schema,
        )  # fmt: skip
        server.middleware = []  # no per-message tracing span on the hot path
        return server

    def input_schema(self, name: str) -> dict[str, Any] | None:
        ex = self.index.get(name)
        return ex.definition.input_schema if ex is not None else None

    async def handle_list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        self.session_for(ctx)
        for up in self.upstreams.values():
            if up.session is not None:
                try:
                    await up.list_tools()
                except Exception as exc:
                    log.error("tools/list on upstream %s failed: %s", up.slug, exc)
        self.rebuild_index()
        return types.ListToolsResult(tools=[ex.definition for ex in self.index.values() if self.visible(ex)])

    async def handle_call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        """The SDK path (HTTP, or stdio when the fast path does not apply)."""
        try:
            raw = await self.execute(self.session_for(ctx), params.name, params.arguments)
        except UpstreamError as exc:
            raise MCPError(exc.code, str(exc.error.get("message", "")), exc.error.get("data")) from exc
        return types.CallToolResult.model_validate(raw)

    async def execute(
        self, sess: AgentSession, name: str, arguments: dict[str, Any] | None
    ) -> dict[str, Any]:
        """One tools/call: decision → INTENT → forward → RESULT → post checks. Returns the wire result.

        Raises UpstreamError for a JSON-RPC error to pass back to the agent unchanged.
        """
        ex = self.index.get(name)
        if ex is not None:
            call = ToolCall(ex.server, ex.tool, arguments, not ex.definition_ok)
        else:
            parts = split_name(name)
            if parts is None:
                raise UpstreamError(
                    {
                        "code": types.INVALID_PARAMS,
                        "message": f"Unknown tool: {name} (tools are named <server>__<tool>)",
                    }
                )
            call = ToolCall(parts[0], parts[1], arguments)
        state = sess.state
        now = time.time()
        policy = self.policy
        decision = decide(policy, state, call, now)
        spool = sess.spool
        intent = spool.intent(call_id=str(uuid.uuid4()), server=call.server, tool=call.tool, arguments=arguments,
                              bundle_version=policy.version, now=now,
                              trigger=APPROVAL_REQUIRED if decision.verdict == APPROVAL else None)  # fmt: skip
        if decision.verdict != ALLOW:
            if decision.verdict == APPROVAL:
                decision = await self._await_approval(sess, intent, call, decision)
            if decision.verdict == REFUSE:
                return self._refuse(sess, intent, call, decision, now)
        upstream = ex.upstream if ex is not None else self.upstreams.get(call.server)
        tool_rule = policy.rule(call.server).tool(call.tool)
        state.record_forwarded(call.server, tool_rule.is_write, call_resource(call.server, arguments), now)
        timeout = decision.timeout or self.options.default_timeout
        t0 = time.perf_counter()
        try:
            if upstream is None:
                raise UpstreamClosed(f"server {call.server} is not configured on this gateway")
            result = await upstream.call_raw(call.tool, arguments, timeout)
        except (UpstreamClosed, UpstreamTimeout, UpstreamError) as exc:
            ms = (time.perf_counter() - t0) * 1000
            if isinstance(exc, UpstreamError):
                summary = f"error {exc.code}: {exc.error.get('message', '')}"
            else:
                summary = str(exc)
            spool.result(intent, status="fail", result_summary=summary, nbytes=0, duration_ms=ms)
            state.record_outcome(
                CallRecord(intent["ts"], call.server, call.tool, intent["args_summary"], f"fail ({summary})")
            )
            if isinstance(exc, UpstreamError):
                raise
            return error_result(f"MCP call failed: {summary} (recorded as status=fail; not retried)")
        ms = (time.perf_counter() - t0) * 1000
        nbytes = result_size(result)
        post = check_result(
            policy, state, call, result_bytes=nbytes, rows=result_rows(result.get("structuredContent"))
        )
        if post is not None:
            spool.result(intent, status="blocked", result_summary=f"result withheld ({nbytes} bytes)", nbytes=nbytes,
                         duration_ms=ms, trigger=post.trigger)  # fmt: skip
            state.record_outcome(CallRecord(intent["ts"], call.server, call.tool, intent["args_summary"],
                                            f"blocked ({post.trigger}, result withheld)"))  # fmt: skip
            self._apply_state(sess, post)
            return error_result(post.message)
        text = result_text(result, RESULT_PAYLOAD_LIMIT)
        status = "fail" if result.get("isError") else "success"
        summary = redact_text(text[:200].replace("\n", " ")) if text else f"{nbytes} bytes"
        spool.result(intent, status=status, result_summary=summary, nbytes=nbytes, duration_ms=ms,
                     result={"text": redact_text(text), "is_error": status == "fail"})  # fmt: skip
        state.record_outcome(CallRecord(intent["ts"], call.server, call.tool, intent["args_summary"], status))
        return result

    # the stdio fast path: tools/call lines handled before the SDK server sees them

    def intercept(self, line: bytes) -> bool:
        """Take a ``tools/call`` request line off the SDK's hands (legacy handshake sessions only)."""
        if not self.fast_path or b'"tools/call"' not in line:
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
        task = asyncio.get_running_loop().create_task(self._fast_call(msg["id"], params["name"], arguments))
        self._fast_tasks.add(task)
        task.add_done_callback(self._fast_tasks.discard)
        return True

    async def _fast_call(self, request_id: Any, name: str, arguments: dict[str, Any] | None) -> None:
        sess = self.sessions.get("stdio") or self.open_session("stdio")
        try:
            response: dict[str, Any] = {
                "jsonrpc": "2.0",
                "id": request_id,
                "result": await self.execute(sess, name, arguments),
            }
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

    def _refuse(self, sess: AgentSession, intent: dict[str, Any], call: ToolCall, decision: Decision,
                now: float) -> dict[str, Any]:  # fmt: skip
        sess.spool.result(intent, status="blocked", result_summary=decision.message.splitlines()[0][:300], nbytes=0,
                          duration_ms=0.0, trigger=decision.trigger, now=now)  # fmt: skip
        sess.state.record_outcome(CallRecord(intent["ts"], call.server, call.tool, intent["args_summary"],
                                             f"blocked ({decision.trigger})"))  # fmt: skip
        self._apply_state(sess, decision)
        log.warning("BLOCKED %s.%s: %s", call.server, call.tool, decision.message.splitlines()[0])
        return error_result(decision.message)

    def _apply_state(self, sess: AgentSession, decision: Decision) -> None:
        st = sess.state
        if decision.new_state == HALTED:
            st.halt(decision.trigger, decision.reason)
        elif decision.new_state == PAUSED:
            st.pause(decision.pause_key or "", decision.reason)
        else:
            return
        log.error("session %s %s (trigger %s)", st.session_id, st.state, decision.trigger)
        sess.spool.flush()
        if self.tg is not None and self.portal is not None:
            self.tg.start_soon(self._report_state, sess, decision.trigger, decision.reason)

    async def _await_approval(self, sess: AgentSession, intent: dict[str, Any], call: ToolCall,
                              decision: Decision) -> Decision:  # fmt: skip
        if self.portal is None:
            return Decision(REFUSE, APPROVAL_REQUIRED, decision.message + "\nNo portal is configured to ask a person "
                            "for approval (offline mode), so the call is refused.")  # fmt: skip
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
            return Decision(ALLOW, timeout=decision.timeout)
        why = f"denied by {answer[1]}" if answer else f"no decision within {self.options.approval_timeout:g}s"
        return Decision(REFUSE, APPROVAL_REQUIRED, f"{decision.message}\nApproval {why}.")

    # running

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        """Upstreams connected, background tasks (bundle poll, shipper, supervisors) running."""
        async with anyio.create_task_group() as tg:
            self.tg = tg
            if self.portal is not None:
                self.shipper = Shipper(self.options.spool_dir, self.portal.post_events, self._shipper_open)
                tg.start_soon(self.shipper.run)
                tg.start_soon(self.bundles.run)
            elif self.options.bundle_file:
                tg.start_soon(self._watch_bundle_file, Path(self.options.bundle_file))
            tg.start_soon(self._flush_spools)
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
                        with anyio.move_on_after(5), contextlib.suppress(Exception):
                            await self.shipper.ship_all()
                tg.cancel_scope.cancel()

    async def _flush_spools(self) -> None:
        """RESULTs written since the last fsync, and the human-readable logs, reach the disk within 0.5 s."""
        while True:
            await anyio.sleep(0.5)
            for sess in list(self.sessions.values()):
                with contextlib.suppress(OSError, ValueError):
                    sess.spool.flush()

    async def _shipper_open(self, meta: dict[str, Any]) -> None:
        assert self.portal is not None
        await self.portal.open_session(meta)

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


# --- CLI -----------------------------------------------------------------------------------------------------


def upstreams_from_bundle(verified: VerifiedBundle, role: str) -> dict[str, UpstreamConfig]:
    """Without --config: every server of the bundle that is allowed for the role and bound here."""
    bundle = verified.bundle
    policy = compile_policy(bundle, role)
    out = {}
    for slug, spec in bundle.servers.items():
        rule = policy.rule(slug)
        if rule.role_violation is None and rule.env_violation is None:
            out[slug] = UpstreamConfig(slug=slug, command=spec.command, args=spec.args, url=spec.url)
    return out


def run_gateway_cli(args: argparse.Namespace) -> int:
    from mcpgov.policy_source import PolicySourceError, make_manager

    logging.basicConfig(level=os.environ.get("MCPGOV_LOG_LEVEL", "WARNING"), stream=sys.stderr,
                        format="mcpgov %(levelname)s %(name)s: %(message)s")  # fmt: skip
    if not args.role:
        print("gateway needs --role", file=sys.stderr)
        return 2
    if not args.bundle_file and not (args.portal and args.token):
        print("mcpgov gateway: give --bundle-file, or --portal and --token", file=sys.stderr)
        return 2
    if not args.state_dir:
        args.state_dir = os.path.join(args.spool, "..", "state") if args.spool else "var/mcpgov/state"
    try:
        bundles = make_manager(args)
    except PolicySourceError as exc:
        print(f"mcpgov gateway: {exc}", file=sys.stderr)
        return 2
    # one event loop for everything: the portal client's connections belong to it
    return anyio.run(_gateway_main, args, bundles)


async def _first_bundle(args: argparse.Namespace, bundles: BundleManager) -> VerifiedBundle | None:
    from mcpgov.verify import BundleVerificationError

    if args.bundle_file:
        bundles.load_file(args.bundle_file)  # raises BundleVerificationError / OSError
        return bundles.current
    bundles.load_cache()
    try:
        with anyio.move_on_after(10):
            await bundles.refresh()
    except BundleVerificationError:
        pass  # logged loudly by the manager; never used
    except Exception as exc:
        log.error("portal unreachable at start (%s); using the cached bundle if any", exc)
    return bundles.current


async def _gateway_main(args: argparse.Namespace, bundles: BundleManager) -> int:
    from mcpgov.verify import BundleVerificationError

    portal = PortalClient(args.portal, args.token) if not args.bundle_file else None
    bundles.client = portal
    try:
        try:
            verified = await _first_bundle(args, bundles)
        except BundleVerificationError as exc:
            print(f"mcpgov gateway: bundle rejected: {exc.code}: {exc.message}", file=sys.stderr)
            return EXIT_NO_BUNDLE
        except OSError as exc:
            print(f"mcpgov gateway: {exc}", file=sys.stderr)
            return EXIT_NO_BUNDLE
        if verified is None:
            print("mcpgov gateway: no verified bundle (portal unreachable and nothing cached): refusing to start",
                  file=sys.stderr)  # fmt: skip
            return EXIT_NO_BUNDLE
        extra: tuple[str, ...] = ()
        if args.config:
            upstreams, extra = load_mcp_config(args.config, environment=args.env)
        else:
            upstreams = upstreams_from_bundle(verified, args.role)
        violations = environment_gate(verified.bundle, args.role, upstreams, extra_forbidden_patterns=extra)
        print(gate_report(verified.bundle, args.role, upstreams, violations), file=sys.stderr)
        # an expired bundle alone does not stop the start: the gateway serves and fails closed on every call
        if any(v.server != "(bundle)" for v in violations):
            return EXIT_GATE_FAILED
        options = GatewayOptions(
            environment=args.env, role=args.role,
            read_only=True if args.read_only is None else args.read_only,
            declared_large_data=bool(args.declare_large_data),
            spool_dir=Path(args.spool or "var/mcpgov/spool"), agent=args.agent or "",
            default_timeout=args.default_timeout, approval_timeout=args.approval_timeout,
            upstream_mode=args.upstream_mode, durability=args.durability, human_log=args.audit_log,
            bundle_file=args.bundle_file,
        )  # fmt: skip
        gateway = Gateway(options, bundles, upstreams, portal)
        if args.http:
            host, _, port = args.http.rpartition(":")
            await serve_http(gateway, host or "127.0.0.1", int(port))
        else:
            await serve_stdio(gateway)
        return 0
    finally:
        if portal is not None:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await portal.aclose()


async def serve_stdio(gateway: Gateway) -> None:
    from mcp.server.stdio import stdio_server

    from mcpgov import fast_stdio

    async with gateway.running():
        gateway.open_session("stdio")
        server = gateway.server
        if fast_stdio.available():

            def initialized() -> None:
                gateway.fast_path = os.environ.get("MCPGOV_FAST_PATH", "1") != "0"

            async with fast_stdio.pipe_stdio(gateway.intercept, initialized) as (stdin, stdout):
                gateway.wire = stdout.writer
                async with stdio_server(stdin, stdout) as (r, w):  # type: ignore[arg-type]
                    await server.run(r, w, server.create_initialization_options())
        else:  # stdin or stdout is a regular file: the SDK's threaded streams
            async with stdio_server() as (r, w):
                await server.run(r, w, server.create_initialization_options())


async def serve_http(gateway: Gateway, host: str, port: int) -> None:
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    async with gateway.running():
        security = None
        if host not in ("127.0.0.1", "localhost", "::1"):  # the SDK's default already covers loopback
            security = TransportSecuritySettings(
                allowed_hosts=[host, f"{host}:*"], allowed_origins=[f"http://{host}:*"]
            )
        app = gateway.server.streamable_http_app(
            streamable_http_path="/mcp", host=host, transport_security=security
        )
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        await uvicorn.Server(config).serve()
