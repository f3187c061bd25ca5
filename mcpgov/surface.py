"""The MCP surface beyond tools: resources, prompts, completion, logging, ping, progress, list changes, and
the requests upstream servers make of the agent's side (sampling, elicitation, roots). See ``docs/gateway.md``.

Names carry the server as tools do: prompts are ``<server>__<prompt>``, resource URIs and templates
``<server>+<uri>`` (still a URI: ``filesystem+file:///tmp/a``). ``resources/read`` and ``prompts/get``
are governed as read calls on their server (the pure :func:`mcpgov.decision.decide`, INTENT and RESULT
in the audit, the large-data check); server-to-client requests by the server's ``server_requests``
policy (:func:`mcpgov.decision.decide_server_request`), each audited as its own event.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.methods import is_input_required
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import TypeAdapter

from mcpgov.audit import RESULT_PAYLOAD_LIMIT
from mcpgov.bundle import Trigger
from mcpgov.config import NAME_SEPARATOR
from mcpgov.decision import ToolCall, check_result, decide, decide_server_request, forbidden_pattern_hit
from mcpgov.identity import RUN_META_KEY
from mcpgov.redact import redact_text
from mcpgov.session import CallRecord, call_resource
from mcpgov.upstream import (
    CALLER,
    TASKS_EXTENSION,
    Caller,
    Upstream,
    UpstreamClosed,
    UpstreamError,
    UpstreamHandler,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from mcpgov.control import AgentSession
    from mcpgov.gateway import Gateway

log = logging.getLogger("mcpgov.gateway")

URI_SEPARATOR = "+"
POLICY_REFUSED = (
    -32004
)  # JSON-RPC server error: the bundle refuses this request (the message names the trigger)
RESOURCE_NOT_FOUND = -32002  # MCP's code for an unknown resource
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
# how long the agent's side may take to answer a server's sampling / elicitation / roots request
SERVER_REQUEST_TIMEOUT = 600.0
# a resources/read or prompts/get answer: its result, or (2026-07-28) a request for the agent's input first
READ_RESULT: TypeAdapter[types.ReadResourceResult | types.InputRequiredResult] = TypeAdapter(
    types.ReadResourceResult | types.InputRequiredResult
)
PROMPT_RESULT: TypeAdapter[types.GetPromptResult | types.InputRequiredResult] = TypeAdapter(
    types.GetPromptResult | types.InputRequiredResult
)


# A filtered tools/list is per caller: never cached by shared caches, and stale within the long poll's
# propagation bound (a new bundle arrives within a second), so a revoked tool does not linger.
LIST_TTL_MS = 1000
REVOKED_MESSAGE = (
    "MCP call refused (kill switch): this gateway's enforcement client was revoked or its token is no "
    "longer valid on the portal; no call is forwarded until an administrator issues a new token."
)


def exposed_name(server: str, tool: str) -> str:
    """The name the agent sees: ``<server>__<tool>`` (server slugs may not contain ``__``)."""
    return f"{server}{NAME_SEPARATOR}{tool}"


def error_result(message: str) -> dict[str, Any]:
    """A tool result the agent reads as an error (``isError``): refusals, failed forwards."""
    return {"content": [{"type": "text", "text": message}], "isError": True}


def split_name(name: str) -> tuple[str, str] | None:
    server, sep, tool = name.partition(NAME_SEPARATOR)
    return (server, tool) if sep and server and tool else None


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


def retry_params(
    params: types.CallToolRequestParams | types.ReadResourceRequestParams | types.GetPromptRequestParams,
) -> dict[str, Any] | None:
    """The agent's ``inputResponses`` / ``requestState`` as wire values, or None for a first request
    (a 2026-07-28 retry of ``tools/call``, ``resources/read`` or ``prompts/get``: :mod:`mcpgov.mrtr`)."""
    if params.request_state is None and not params.input_responses:
        return None
    responses = {
        str(k): v.model_dump(by_alias=True, mode="json", exclude_none=True)
        for k, v in (params.input_responses or {}).items()
    }
    return {"inputResponses": responses, "requestState": params.request_state}


def exposed_uri(server: str, uri: str) -> str:
    return f"{server}{URI_SEPARATOR}{uri}"


def split_uri(uri: str) -> tuple[str, str] | None:
    server, sep, rest = uri.partition(URI_SEPARATOR)
    return (server, rest) if sep and rest and _SLUG.match(server) else None


def prefix_resource_uris(server: str, content: Any) -> None:
    """``resource_link`` and embedded ``resource`` URIs in a result, as the agent must name them to read them."""
    if not isinstance(content, list):
        return
    for c in content:
        if not isinstance(c, dict):
            continue
        kind = c.get("type")
        if kind == "resource_link" and isinstance(c.get("uri"), str):
            c["uri"] = exposed_uri(server, c["uri"])
        elif (
            kind == "resource"
            and isinstance(c.get("resource"), dict)
            and isinstance(c["resource"].get("uri"), str)
        ):
            c["resource"]["uri"] = exposed_uri(server, c["resource"]["uri"])


def contents_size(result: dict[str, Any]) -> int:
    """Bytes of a ``resources/read`` result: text (UTF-8) and blobs (base64 length)."""
    n = 0
    for c in result.get("contents") or ():
        text = c.get("text")
        if text is not None:
            n += len(text.encode("utf-8"))
        else:
            n += len(c.get("blob") or "")
    return n


def prompt_size(result: dict[str, Any]) -> int:
    return result_size({"content": [m.get("content") or {} for m in result.get("messages") or ()]})


def _summary_text(result: dict[str, Any]) -> str:
    parts: list[str] = []
    for c in result.get("contents") or ():
        parts.append(c["text"] if c.get("text") is not None else f"<blob {c.get('mimeType') or ''}>")
    for m in result.get("messages") or ():
        content = m.get("content") or {}
        parts.append(content.get("text") or f"<{content.get('type', 'content')}>")
    return "\n".join(parts)[:RESULT_PAYLOAD_LIMIT]


@dataclass(slots=True)
class ScreenedRequest:
    """A request of an upstream of the agent's side, decided and its INTENT recorded (RESULT if refused)."""

    allowed: bool
    intent: dict[str, Any]
    wire: dict[str, Any]  # its params as they go to the agent (maxTokens capped)
    reason: str = ""
    message: str = ""  # the refusal the upstream (or the agent) is told


class GatewayServer(Server[Any]):
    """The SDK server that says ``listChanged`` for tools, resources and prompts: the gateway sends them."""

    def create_initialization_options(self, notification_options=None, *args: Any, **kwargs: Any):  # type: ignore[override]
        options = notification_options or NotificationOptions(
            prompts_changed=True, resources_changed=True, tools_changed=True
        )
        return super().create_initialization_options(options, *args, **kwargs)

    # set by the gateway: whether task-augmented tools/call can be relayed (mcpgov.tasks)
    tasks_capability: Callable[[], types.ServerTasksCapability | None] | None = None
    # and whether the 2026-07-28 tasks extension is (an upstream runs it)
    tasks_extension: Callable[[], bool] | None = None

    def get_capabilities(self, *args: Any, **kwargs: Any) -> types.ServerCapabilities:
        caps = super().get_capabilities(*args, **kwargs)
        if kwargs.get("protocol_version") is None:  # 2025-11-25 handshake sessions
            tasks = self.tasks_capability() if self.tasks_capability is not None else None
            if tasks is not None:
                caps = caps.model_copy(update={"tasks": tasks})
        elif self.tasks_extension is not None and self.tasks_extension():  # 2026-07-28 server/discover
            caps = caps.model_copy(update={"extensions": {**(caps.extensions or {}), TASKS_EXTENSION: {}}})
        return caps


class Surface(UpstreamHandler):
    """The handlers of the wider surface for one gateway, and what its upstreams send or ask."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.listed_servers: frozenset[str] = frozenset()  # set once the policy is known (start)
        # (server, upstream URI) -> the agent sessions subscribed (one upstream subscription for all)
        self.subscribers: dict[tuple[str, str], set[str]] = {}
        # upstreams whose tools are being listed again; a list_changed meanwhile asks for one more round
        # (a flood of list_changed from an upstream costs one listing at a time, not one each)
        self._refreshing: dict[str, bool] = {}
        # HTTP: Mcp-Session-Id -> the SDK session object of that agent connection (what it declared at
        # initialize), for the fast path's streamed calls (mcpgov.fast_http_stream); dropped at its end
        self.connections: dict[str, Any] = {}
        for up in gateway.upstreams.values():
            up.handler = self

    def start(self) -> None:
        """The gateway has its policy: the servers listed now are what later list changes compare with."""
        self.listed_servers = frozenset(slug for slug in self.gateway.upstreams if self.server_listed(slug))

    def register(self, server: Server[Any]) -> None:
        for method, params_type, handler in (
            ("resources/list", types.PaginatedRequestParams, self.list_resources),
            ("resources/templates/list", types.PaginatedRequestParams, self.list_resource_templates),
            ("resources/read", types.ReadResourceRequestParams, self.read_resource),
            ("resources/subscribe", types.SubscribeRequestParams, self.subscribe),
            ("resources/unsubscribe", types.UnsubscribeRequestParams, self.unsubscribe),
            ("prompts/list", types.PaginatedRequestParams, self.list_prompts),
            ("prompts/get", types.GetPromptRequestParams, self.get_prompt),
            ("completion/complete", types.CompleteRequestParams, self.complete),
            ("logging/setLevel", types.SetLevelRequestParams, self.set_level),
            ("ping", types.RequestParams, self.ping),
        ):
            server.add_request_handler(method, params_type, handler)
        server.add_notification_handler(
            "notifications/initialized", types.NotificationParams, self.initialized
        )
        server.add_notification_handler(
            "notifications/roots/list_changed", types.NotificationParams, self.roots_changed
        )

    # who is asking

    def session(self, ctx: ServerRequestContext[Any]) -> AgentSession:
        sess = self.gateway.session_for(ctx)
        sess.peer = ctx.session  # the agent's newest connection: where notifications for it go
        return sess

    @contextlib.contextmanager
    def caller(self, ctx: ServerRequestContext[Any], sess: AgentSession) -> Iterator[Caller]:
        """The agent request in flight (:data:`mcpgov.upstream.CALLER`): its progress token, its connection."""
        meta = ctx.meta or {}
        wants = meta.get("progress_token", meta.get("progressToken"))  # the SDK's parsed _meta is snake_case
        progress = ctx.session.report_progress if wants is not None else None
        modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        caller = Caller(sess, ctx.session, ctx.request_id, progress, modern=modern)
        token = CALLER.set(caller)
        try:
            yield caller
        finally:
            CALLER.reset(token)

    async def initialized(self, ctx: ServerRequestContext[Any], params: Any) -> None:
        if ctx.request is None:  # stdio: the one agent's connection, known before its first request
            self.session(ctx)
            return
        sid = ctx.request.headers.get("mcp-session-id")
        if sid:
            self.connections[sid] = ctx.session

    async def roots_changed(self, ctx: ServerRequestContext[Any], params: Any) -> None:
        """The agent's roots changed: told to the upstreams that may list them (``server_requests.roots``)."""
        policy = self.gateway.policy
        for up in self.gateway.upstreams.values():
            if (
                up.session is not None
                and self.server_listed(up.slug)
                and policy.rule(up.slug).server_requests.roots
            ):
                with contextlib.suppress(Exception):
                    await up.session.send_notification(types.RootsListChangedNotification())

    async def ping(self, ctx: ServerRequestContext[Any], params: Any) -> types.EmptyResult:
        return types.EmptyResult()

    def _meta(self, ctx: ServerRequestContext[Any], sess: AgentSession) -> dict[str, Any] | None:
        return {RUN_META_KEY: sess.run_id} if ctx.request is not None else None

    # listing

    def server_listed(self, slug: str) -> bool:
        """Listed to this gateway's role: allowed and bound here (a halted session still sees the lists)."""
        rule = self.gateway.policy.rule(slug)
        return rule.role_violation is None and rule.env_violation is None

    def uri_forbidden(self, uri: str) -> bool:
        return forbidden_pattern_hit([uri], self.gateway.policy.forbidden_patterns) is not None

    def _upstreams(self, capability: str) -> Iterator[Upstream]:
        for slug, up in self.gateway.upstreams.items():
            caps = up.capabilities
            if caps is not None and getattr(caps, capability, None) is not None and self.server_listed(slug):
                yield up

    async def _pages(self, up: Upstream, request_type: Any, result_type: Any, field: str) -> list[Any]:
        """Every page of an upstream list, collapsed (as for tools); a failing upstream lists nothing."""
        items: list[Any] = []
        cursor: str | None = None
        try:
            while True:
                params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
                assert up.session is not None
                page = await up.session.send_request(
                    request_type(params=params), result_type, request_read_timeout_seconds=30
                )
                items.extend(getattr(page, field))
                if (cursor := page.next_cursor) is None:
                    return items
        except Exception as exc:
            log.error(
                "%s on upstream %s failed: %s", request_type.model_fields["method"].default, up.slug, exc
            )
            return items

    async def _listing(
        self,
        ctx: ServerRequestContext[Any],
        capability: str,
        request_type: Any,
        result_type: Any,
        field: str,
        rename: Callable[[str, Any], Any | None],
    ) -> Any:
        """One list of the wider surface: every upstream's pages, renamed (None: hidden), per caller."""
        sess = self.session(ctx)
        out = []
        for up in self._upstreams(capability):
            for item in await self._pages(up, request_type, result_type, field):
                renamed = rename(up.slug, item)
                if renamed is not None:
                    out.append(renamed)
        return result_type(
            **{field: out}, ttl_ms=LIST_TTL_MS, cache_scope="private", _meta=self._meta(ctx, sess)
        )

    async def list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        def rename(slug: str, r: types.Resource) -> types.Resource | None:
            if self.uri_forbidden(r.uri):
                return None
            return r.model_copy(update={"uri": exposed_uri(slug, r.uri)})

        return await self._listing(
            ctx, "resources", types.ListResourcesRequest, types.ListResourcesResult, "resources", rename
        )

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        def rename(slug: str, t: types.ResourceTemplate) -> types.ResourceTemplate:
            return t.model_copy(update={"uri_template": exposed_uri(slug, t.uri_template)})

        return await self._listing(
            ctx,
            "resources",
            types.ListResourceTemplatesRequest,
            types.ListResourceTemplatesResult,
            "resource_templates",
            rename,
        )

    async def list_prompts(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        def rename(slug: str, p: types.Prompt) -> types.Prompt:
            return p.model_copy(update={"name": exposed_name(slug, p.name)})

        return await self._listing(
            ctx, "prompts", types.ListPromptsRequest, types.ListPromptsResult, "prompts", rename
        )

    # governed reads

    async def read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        sess = self.session(ctx)
        parts = split_uri(params.uri)
        if parts is None:
            raise MCPError(
                RESOURCE_NOT_FOUND, f"Unknown resource: {params.uri} (resources are named <server>+<uri>)"
            )
        slug, uri = parts
        call = ToolCall(slug, "resources/read", {"uri": uri}, method="resources/read", uri=uri)
        up = self.gateway.upstreams.get(slug)

        def forward(timeout: float, rounds: dict[str, Any] | None) -> Awaitable[dict[str, Any]]:
            if up is None:
                raise UpstreamClosed(f"server {slug} is not configured on this gateway")
            request = types.ReadResourceRequest(
                params=types.ReadResourceRequestParams.model_validate({"uri": uri, **(rounds or {})})
            )
            return up.request(request, READ_RESULT, timeout)

        result = await self.governed(ctx, sess, call, params.uri, params, forward, contents_size)
        if is_input_required(result):
            return self._round_answer(ctx, sess, result)
        for c in result.get("contents") or ():
            if isinstance(c.get("uri"), str):
                c["uri"] = exposed_uri(slug, c["uri"])
        result.pop("resultType", None)
        if ctx.request is not None:
            result.setdefault("_meta", {})[RUN_META_KEY] = sess.run_id
        return types.ReadResourceResult.model_validate(result)

    async def get_prompt(
        self, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult | types.InputRequiredResult:
        sess = self.session(ctx)
        parts = split_name(params.name)
        if parts is None:
            raise MCPError(
                types.INVALID_PARAMS, f"Unknown prompt: {params.name} (prompts are named <server>__<prompt>)"
            )
        slug, name = parts
        call = ToolCall(
            slug, "prompts/get", {"name": name, "arguments": params.arguments}, method="prompts/get"
        )
        up = self.gateway.upstreams.get(slug)

        def forward(timeout: float, rounds: dict[str, Any] | None) -> Awaitable[dict[str, Any]]:
            if up is None:
                raise UpstreamClosed(f"server {slug} is not configured on this gateway")
            request = types.GetPromptRequest(
                params=types.GetPromptRequestParams.model_validate(
                    {"name": name, "arguments": params.arguments, **(rounds or {})}
                )
            )
            return up.request(request, PROMPT_RESULT, timeout)

        result = await self.governed(ctx, sess, call, params.name, params, forward, prompt_size)
        if is_input_required(result):
            return self._round_answer(ctx, sess, result)
        for message in result.get("messages") or ():
            if isinstance(message, dict):
                prefix_resource_uris(slug, [message.get("content")])
        result.pop("resultType", None)
        if ctx.request is not None:
            result.setdefault("_meta", {})[RUN_META_KEY] = sess.run_id
        return types.GetPromptResult.model_validate(result)

    def _round_answer(
        self, ctx: ServerRequestContext[Any], sess: AgentSession, result: dict[str, Any]
    ) -> types.InputRequiredResult:
        if ctx.request is not None:
            result.setdefault("_meta", {})[RUN_META_KEY] = sess.run_id
        return types.InputRequiredResult.model_validate(result)

    async def governed(
        self,
        ctx: ServerRequestContext[Any],
        sess: AgentSession,
        call: ToolCall,
        target: str,
        params: Any,
        forward: Callable[[float, dict[str, Any] | None], Awaitable[dict[str, Any]]],
        size: Callable[[dict[str, Any]], int],
    ) -> dict[str, Any]:
        """A read of the wider surface on the tools' call path: decide → INTENT → forward → RESULT → post checks.

        A refusal is a JSON-RPC error (these methods have no ``isError`` result) naming the trigger.
        A 2026-07-28 upstream may answer ``InputRequiredResult`` first (:mod:`mcpgov.mrtr`): the rounds
        are one logical read under its first decision: one INTENT, counted once, one RESULT at its end.
        ``target`` is what the agent named (``<server>+<uri>``, ``<server>__<prompt>``): what a
        round's sealed state is bound to, with the method, the arguments and the session.
        """
        gw = self.gateway
        if gw.portal is not None and gw.portal.revoked:
            raise MCPError(POLICY_REFUSED, REVOKED_MESSAGE)
        with self.caller(ctx, sess) as caller:
            retry = retry_params(params)
            if retry is not None:  # the agent's retry of a round: the same read, not decided or counted again
                intent, up_rounds, round_no, timeout = gw.rounds.resume_read(sess, call, target, retry)
            else:
                now = time.time()
                policy = gw.policy
                decision = decide(policy, sess.state, call, now)
                intent = sess.spool.intent(
                    call_id=str(uuid.uuid4()),
                    server=call.server,
                    tool=call.tool,
                    arguments=call.arguments,
                    bundle_version=policy.version,
                    now=now,
                )
                if not decision.allowed:
                    gw._refuse(sess, intent, call, decision, now)
                    raise MCPError(POLICY_REFUSED, decision.message, {"trigger": str(decision.trigger)})
                sess.state.record_forwarded(
                    call.server, False, call_resource(call.server, call.arguments), now
                )
                up_rounds, round_no, timeout = None, 1, decision.timeout or gw.options.default_timeout
            while True:
                t0 = time.perf_counter()
                result = await self._forward_read(sess, intent, call, forward, timeout, up_rounds, t0)
                if not is_input_required(result):
                    break
                asked = await gw.rounds.read_asked(
                    sess, intent, call, target, result, round_no, timeout, caller.modern, ctx.session
                )
                if is_input_required(asked):  # the agent's round; its retry continues this read
                    return asked
                up_rounds, round_no = asked, round_no + 1  # answered by the gateway: the next upstream round
        ms = (time.perf_counter() - t0) * 1000
        policy = gw.policy
        nbytes = size(result)
        post = check_result(policy, sess.state, call, result_bytes=nbytes)
        if post is not None:
            message = gw._withhold(sess, intent, call, post, nbytes, ms)
            raise MCPError(POLICY_REFUSED, message, {"trigger": str(post.trigger)})
        text = _summary_text(result)
        sess.spool.result(
            intent,
            status="success",
            result_summary=redact_text(text[:200].replace("\n", " ")) if text else f"{nbytes} bytes",
            nbytes=nbytes,
            duration_ms=ms,
            result={"text": redact_text(text), "is_error": False},
        )
        sess.state.record_outcome(
            CallRecord(intent["ts"], call.server, call.tool, intent["args_summary"], "success")
        )
        return result

    async def _forward_read(
        self,
        sess: AgentSession,
        intent: dict[str, Any],
        call: ToolCall,
        forward: Callable[[float, dict[str, Any] | None], Awaitable[dict[str, Any]]],
        timeout: float,
        rounds: dict[str, Any] | None,
        t0: float,
    ) -> dict[str, Any]:
        """One upstream round of a governed read; a failure is its RESULT ``fail`` and the agent's error."""
        gw = self.gateway
        try:
            return await forward(timeout, rounds)
        except (UpstreamClosed, UpstreamTimeout, UpstreamError) as exc:
            summary = gw._forward_failed(sess, intent, call, exc, (time.perf_counter() - t0) * 1000)
            if isinstance(exc, UpstreamError):
                raise MCPError(exc.code, str(exc.error.get("message", "")), exc.error.get("data")) from exc
            raise MCPError(
                types.INTERNAL_ERROR, f"MCP call failed: {summary} (recorded as status=fail)"
            ) from exc
        except anyio.get_cancelled_exc_class():
            with contextlib.suppress(Exception):  # a spool closed by the session's end meanwhile
                gw._forward_failed(sess, intent, call, None, (time.perf_counter() - t0) * 1000)
            raise

    # not audited: they return nothing of the server's data beyond names, or only change the agent's view

    def _target(self, slug: str, uri: str | None = None) -> Upstream:
        up = self.gateway.upstreams.get(slug)
        if up is None or not self.server_listed(slug) or (uri is not None and self.uri_forbidden(uri)):
            raise MCPError(types.INVALID_PARAMS, f"server {slug!r} is not available to this session")
        return up

    async def complete(
        self, ctx: ServerRequestContext[Any], params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        sess = self.session(ctx)
        ref = params.ref
        if isinstance(ref, types.PromptReference):
            parts = split_name(ref.name)
            new_ref: Any = ref.model_copy(update={"name": parts[1]}) if parts else None
        else:
            parts = split_uri(ref.uri)
            new_ref = ref.model_copy(update={"uri": parts[1]}) if parts else None
        if parts is None:
            raise MCPError(types.INVALID_PARAMS, "completion/complete: the reference names no server")
        up = self._target(parts[0], parts[1] if not isinstance(ref, types.PromptReference) else None)
        request = types.CompleteRequest(params=params.model_copy(update={"ref": new_ref, "meta": None}))
        with self.caller(ctx, sess):
            result = await self._plain(up, request, types.CompleteResult)
        return types.CompleteResult.model_validate(result)

    async def _plain(self, up: Upstream, request: Any, result_type: Any) -> dict[str, Any]:
        try:
            result = await up.request(request, result_type, self.gateway.options.default_timeout)
        except UpstreamError as exc:
            raise MCPError(exc.code, str(exc.error.get("message", "")), exc.error.get("data")) from exc
        except (UpstreamClosed, UpstreamTimeout) as exc:
            raise MCPError(types.INTERNAL_ERROR, f"upstream {up.slug}: {exc}") from exc
        result.pop("resultType", None)
        return result

    async def subscribe(
        self, ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        sess = self.session(ctx)
        parts = split_uri(params.uri)
        if parts is None:
            raise MCPError(RESOURCE_NOT_FOUND, f"Unknown resource: {params.uri}")
        up = self._target(*parts)
        key = (parts[0], parts[1])
        subscribed = self.subscribers.setdefault(key, set())
        if not subscribed:
            await self._plain(
                up,
                types.SubscribeRequest(params=types.SubscribeRequestParams(uri=parts[1])),
                types.EmptyResult,
            )
        subscribed.add(sess.id)
        sess.subscriptions.add(params.uri)
        return types.EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        sess = self.session(ctx)
        parts = split_uri(params.uri)
        if parts is None:
            raise MCPError(RESOURCE_NOT_FOUND, f"Unknown resource: {params.uri}")
        sess.subscriptions.discard(params.uri)
        subscribed = self.subscribers.get(parts)
        if subscribed is not None:
            subscribed.discard(sess.id)
            up = self.gateway.upstreams.get(parts[0])
            if not subscribed:
                del self.subscribers[parts]
                if up is not None and up.session is not None:
                    request = types.UnsubscribeRequest(params=types.UnsubscribeRequestParams(uri=parts[1]))
                    await self._plain(up, request, types.EmptyResult)
        return types.EmptyResult()

    async def set_level(
        self, ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        sess = self.session(ctx)
        sess.log_level = params.level
        for up in self._upstreams("logging"):
            with contextlib.suppress(MCPError):
                request = types.SetLevelRequest(params=types.SetLevelRequestParams(level=params.level))
                await self._plain(up, request, types.EmptyResult)
        return types.EmptyResult()

    # what upstreams send

    async def notification(self, upstream: Upstream, message: Any) -> None:
        slug = upstream.slug
        if isinstance(message, types.ToolListChangedNotification):
            # listed again from the gateway's own task group: never inside the upstream's receive path
            if self.gateway.tg is not None:
                self.gateway.tg.start_soon(self.refresh_tools, upstream)
            else:
                await self.refresh_tools(upstream)
        elif isinstance(message, types.ResourceListChangedNotification | types.PromptListChangedNotification):
            if self.server_listed(slug):
                await self.broadcast(message)
        elif isinstance(message, types.ResourceUpdatedNotification):
            uri = exposed_uri(slug, message.params.uri)
            for sess in list(self.gateway.sessions.values()):
                if uri in sess.subscriptions:
                    note = types.ResourceUpdatedNotification(
                        params=types.ResourceUpdatedNotificationParams(uri=uri)
                    )
                    await self._send(sess.peer, note)
        elif isinstance(message, types.LoggingMessageNotification):
            await self.forward_log(upstream, message.params)

    async def refresh_tools(self, upstream: Upstream) -> None:
        """An upstream's tools changed: list them again, re-pin, and tell the agents whose list changed."""
        slug = upstream.slug
        if slug in self._refreshing:
            self._refreshing[slug] = True
            return
        self._refreshing[slug] = True
        try:
            while self._refreshing[slug]:
                self._refreshing[slug] = False
                try:
                    await upstream.list_tools()
                except Exception as exc:
                    log.error("tools/list on upstream %s failed after list_changed: %s", slug, exc)
                    return
                self.gateway.rebuild_index()
                await self.announce()
        finally:
            del self._refreshing[slug]

    async def announce(self) -> None:
        """Tell each agent whose visible tools (or listed servers) changed since it last looked."""
        gw = self.gateway
        listed = frozenset(slug for slug in gw.upstreams if self.server_listed(slug))
        servers_changed = listed != self.listed_servers
        self.listed_servers = listed
        for sess in list(gw.sessions.values()):
            if sess.peer is None:
                continue
            if sess.listed_tools is not None:
                now = frozenset(ex.name for ex in gw.index.values() if gw.visible(ex, sess))
                if now != sess.listed_tools:
                    sess.listed_tools = now
                    await self._send(sess.peer, types.ToolListChangedNotification())
            if servers_changed:
                await self._send(sess.peer, types.ResourceListChangedNotification())
                await self._send(sess.peer, types.PromptListChangedNotification())

    async def broadcast(self, message: Any) -> None:
        for sess in list(self.gateway.sessions.values()):
            await self._send(sess.peer, message)

    async def forward_log(self, upstream: Upstream, params: types.LoggingMessageNotificationParams) -> None:
        """To the agents the upstream is working for now, else to those that set a level; logger prefixed."""
        targets: list[tuple[Any, Any]] = [(c.session, c) for c in upstream.callers]
        if not targets:  # never to every agent of an HTTP gateway: only those that asked for logs
            targets = [(s, None) for key, s in self.gateway.sessions.items() if s.log_level or key == "stdio"]
        seen: set[str] = set()
        logger = upstream.slug + (f".{params.logger}" if params.logger else "")
        note = types.LoggingMessageNotification(
            params=types.LoggingMessageNotificationParams(level=params.level, logger=logger, data=params.data)
        )
        for sess, caller in targets:
            if sess.id in seen or not _level_passes(params.level, sess.log_level):
                continue
            seen.add(sess.id)
            if caller is not None and caller.peer is not None:
                await self._send(caller.peer, note, caller.request_id)
            else:
                await self._send(sess.peer, note)

    async def _send(self, peer: Any, message: Any, related: Any = None) -> None:
        if peer is None:
            return
        try:
            await peer.send_notification(message, related_request_id=related)
        except Exception as exc:  # a closed connection, or a 2026-07-28 one with no channel for it
            log.info("notification %s not delivered: %s", getattr(message, "method", message), exc)

    # what upstreams ask of the agent's side

    def _asked(self, upstream: Upstream) -> tuple[AgentSession | None, Caller | None, str]:
        """Whom the upstream asks: the agent whose request it serves (on stdio: the one agent), or nobody.

        A legacy server-to-client request does not say which request it belongs to: when the upstream
        serves several agent sessions at once, it is refused rather than put to a possibly other agent.
        """
        callers = upstream.callers
        if callers:
            caller = callers[-1]
            if any(c.session is not caller.session for c in callers):
                return caller.session, None, "the upstream is serving several agent sessions at once"
            return caller.session, caller, ""
        sess = self.gateway.sessions.get("stdio")
        return sess, None, "" if sess is not None else "no agent session to ask"

    async def server_request(self, upstream: Upstream, method: str, params: Any, context: Any) -> Any:
        """A sampling, elicitation or roots request of an upstream: the bundle decides, the audit records it."""
        gw = self.gateway
        wire = params.model_dump(by_alias=True, mode="json", exclude_none=True) if params is not None else {}
        sess, caller, unclear = self._asked(upstream)
        if sess is None or (gw.portal is not None and gw.portal.revoked):
            # revoked: nothing new is spooled (as for tools/call)
            why = unclear or "this gateway's enforcement client is revoked"
            log.warning("REFUSED %s from %s: %s", method, upstream.slug, why)
            return types.ErrorData(code=types.INVALID_REQUEST, message=f"MCP request refused: {why}")
        peer = caller.peer if caller is not None and caller.peer is not None else sess.peer
        if caller is not None and caller.modern and caller.flight is None and not unclear:
            # a 2026-07-28 agent's request has no channel for a legacy server-to-client request; only a
            # tools/call in flight turns one into a round (mcpgov.mrtr.Flight)
            unclear = (
                f"a 2025-11-25 server's {method} during a 2026-07-28 agent's request other than tools/call "
                "cannot be put to the agent"
            )
        screened = self.screen_server_request(sess, upstream.slug, method, wire, peer, unclear)
        if not screened.allowed:
            return types.ErrorData(code=types.INVALID_REQUEST, message=screened.message)
        if caller is not None and caller.flight is not None:  # a 2026-07-28 agent: asked in a round
            return await caller.flight.ask(upstream.slug, method, screened)
        return await self.ask_agent(sess, caller, peer, upstream.slug, method, screened)

    def screen_server_request(
        self,
        sess: AgentSession,
        server: str,
        method: str,
        wire: dict[str, Any],
        peer: Any,
        unclear: str = "",
        capabilities: types.ClientCapabilities | None = None,
    ) -> ScreenedRequest:
        """Decide one request of ``server`` of the agent's side and record its INTENT (and RESULT if refused).

        The one copy of the rule for both forms: the legacy server-to-client request and an input request
        of a 2026-07-28 ``InputRequiredResult`` (:mod:`mcpgov.mrtr`). ``capabilities``: what the agent
        declared on the request (2026-07-28), else asked of its connection ``peer``.
        """
        gw = self.gateway
        now = time.time()
        decision = decide_server_request(gw.policy, sess.state, server, method, wire, now)
        if decision.allowed and unclear:
            decision.allowed, decision.reason = False, unclear
        intent = sess.spool.intent(
            call_id=str(uuid.uuid4()),
            server=server,
            tool=method,
            arguments=_request_arguments(method, wire),
            bundle_version=gw.policy.version,
            now=now,
        )
        if decision.allowed and capabilities is None and peer is None:
            decision.allowed, decision.reason = False, "the agent's connection is not known yet"
        if decision.allowed and not _agent_supports(peer, method, wire, capabilities):
            decision.allowed, decision.reason = False, f"the agent did not declare the {method} capability"
        if not decision.allowed:
            reason = decision.reason
            gw._record_blocked(sess, intent, server, method, reason, Trigger.SERVER_REQUEST_DENIED, now)
            log.warning("REFUSED %s from %s: %s", method, server, reason)
            return ScreenedRequest(
                False,
                intent,
                wire,
                reason,
                f"MCP request refused by governance policy ({Trigger.SERVER_REQUEST_DENIED}): {reason}",
            )
        return ScreenedRequest(True, intent, {**wire, **decision.changes})

    async def ask_agent(
        self,
        sess: AgentSession,
        caller: Caller | None,
        peer: Any,
        server: str,
        method: str,
        screened: ScreenedRequest,
    ) -> Any:
        """Put an allowed request to the agent's connection (legacy form); its answer or failure is audited."""
        intent, wire = screened.intent, screened.wire
        request, result_type = _server_request_model(method, wire)
        metadata = None
        if caller is not None and caller.request_id is not None:
            metadata = ServerMessageMetadata(related_request_id=caller.request_id)
        t0 = time.perf_counter()
        try:
            result = await peer.send_request(
                request, result_type, request_read_timeout_seconds=SERVER_REQUEST_TIMEOUT, metadata=metadata
            )
        except MCPError as exc:
            self.server_request_failed(sess, intent, server, method, exc.error.message, t0)
            return exc.error
        except Exception as exc:
            self.server_request_failed(sess, intent, server, method, f"{exc.__class__.__name__}: {exc}", t0)
            return types.ErrorData(code=types.INTERNAL_ERROR, message=f"{method} failed at the gateway")
        answer = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        self.answered(sess, intent, server, method, answer, (time.perf_counter() - t0) * 1000)
        return result

    def answered(
        self,
        sess: AgentSession,
        intent: dict[str, Any],
        server: str,
        method: str,
        answer: dict[str, Any],
        ms: float,
    ) -> None:
        """RESULT of a request the agent answered (either form): what it answered, redacted and summarised."""
        text = _answer_text(method, answer)
        sess.spool.result(
            intent,
            status="success",
            result_summary=redact_text(text[:200].replace("\n", " ")),
            nbytes=len(text.encode("utf-8")),
            duration_ms=ms,
            result={"text": redact_text(text[:RESULT_PAYLOAD_LIMIT]), "is_error": False},
        )
        sess.state.record_outcome(CallRecord(intent["ts"], server, method, intent["args_summary"], "success"))

    def server_request_failed(
        self, sess: AgentSession, intent: dict[str, Any], server: str, method: str, summary: str, t0: float
    ) -> None:
        sess.spool.result(
            intent,
            status="fail",
            result_summary=summary[:300],
            nbytes=0,
            duration_ms=(time.perf_counter() - t0) * 1000,
        )
        sess.state.record_outcome(
            CallRecord(intent["ts"], server, method, intent["args_summary"], f"fail ({summary[:80]})")
        )


def _level_passes(level: str, wanted: str | None) -> bool:
    if wanted is None or level not in LOG_LEVELS or wanted not in LOG_LEVELS:
        return True
    return LOG_LEVELS.index(level) >= LOG_LEVELS.index(wanted)


def _request_arguments(method: str, wire: dict[str, Any]) -> dict[str, Any]:
    """What the audit event shows of a server's request (redacted and summarised like tool arguments)."""
    if method == "sampling/createMessage":
        messages = wire.get("messages") or []
        last = messages[-1].get("content") if messages else None
        return {
            "output_limit": wire.get("maxTokens"),  # (a key named *token* would be redacted)
            "messages": len(messages),
            "last_message": last.get("text") if isinstance(last, dict) else None,
            "systemPrompt": wire.get("systemPrompt"),
            "tools": [t.get("name") for t in wire.get("tools") or ()] or None,
        }
    if method == "elicitation/create":
        return {"mode": wire.get("mode") or "form", "message": wire.get("message"), "url": wire.get("url")}
    return {}


def _agent_supports(
    peer: Any, method: str, wire: dict[str, Any], declared: types.ClientCapabilities | None = None
) -> bool:
    if method == "sampling/createMessage":
        sampling = types.SamplingCapability(
            tools=types.SamplingToolsCapability() if wire.get("tools") else None
        )
        capability = types.ClientCapabilities(sampling=sampling)
    elif method == "elicitation/create":
        capability = types.ClientCapabilities(elicitation=types.ElicitationCapability())
    else:
        capability = types.ClientCapabilities(roots=types.RootsCapability())
    if declared is not None:  # 2026-07-28: what the request's _meta declared
        if method == "sampling/createMessage":
            return declared.sampling is not None and (
                not wire.get("tools") or declared.sampling.tools is not None
            )
        if method == "elicitation/create":
            return declared.elicitation is not None
        return declared.roots is not None
    try:
        return bool(peer.check_client_capability(capability))
    except Exception:
        return False


def _server_request_model(method: str, wire: dict[str, Any]) -> tuple[Any, Any]:
    envelope = {"method": method, "params": wire}
    if method == "sampling/createMessage":
        result_type = types.CreateMessageResultWithTools if wire.get("tools") else types.CreateMessageResult
        return types.CreateMessageRequest.model_validate(envelope), result_type
    if method == "elicitation/create":
        return types.ElicitRequest.model_validate(envelope), types.ElicitResult
    return types.ListRootsRequest.model_validate({"method": method}), types.ListRootsResult


def _answer_text(method: str, answer: dict[str, Any]) -> str:
    if method == "sampling/createMessage":
        content = answer.get("content")
        blocks = content if isinstance(content, list) else [content or {}]
        text = " ".join(b.get("text") or f"<{b.get('type', 'content')}>" for b in blocks)
        return f"model={answer.get('model')} stop={answer.get('stopReason')}: {text}"
    if method == "elicitation/create":
        return f"action={answer.get('action')} content={answer.get('content')}"
    return f"{len(answer.get('roots') or [])} roots"
