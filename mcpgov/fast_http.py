"""The streamable HTTP fast path: ``tools/call`` POSTs of an established session answered past the SDK.

Why it bypasses the SDK: for every POST the SDK's streamable HTTP transport runs Starlette routing and
middleware, validates the JSON-RPC message into pydantic models, hands it through memory streams to the
server's message loop and back, and answers on a Server-Sent Events stream; together several
milliseconds per call on a loaded 2-core machine, far more than the policy decision and the audit
(``bench/governed_path.py`` measures both paths). The fast path answers one kind of request itself: a
single plain ``tools/call`` (no ``_meta``) on a legacy (handshake) session the SDK already holds,
from the credential that opened it. It applies the SDK's own checks in the SDK's order with the SDK's
own code where the SDK exposes it (transport security, Accept / Content-Type, the session owner; the
bearer backend's steps with its expiry and resource checks, see ``_Backend``), reads the body with the
SDK's own JSON parser, then runs the very same
:meth:`mcpgov.gateway.Gateway.session_for` and :meth:`~mcpgov.gateway.Gateway.execute` as the SDK
path, and answers ``application/json`` (a server may answer a POST either way). Whenever any check
would not pass, or the request is anything else, the request goes to the SDK unchanged, so every
refusal (401, 404, 406, 400, a role refused) is the SDK's own. ``tests/mcpgov/test_fast_http.py``
proves both paths give the same results, audit events and refusals; ``MCPGOV_FAST_PATH=0`` turns it off.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import (
    AuthenticatedUser,
    BearerAuthBackend,
    authorization_context,
)
from mcp.server.streamable_http import CONTENT_TYPE_JSON, MCP_SESSION_ID_HEADER, check_accept_headers
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.authentication import AuthCredentials
from starlette.datastructures import Headers
from starlette.requests import Request

from mcpgov.fast_http_stream import StreamingCalls, agent_answer, parse_body
from mcpgov.identity import RUN_META_KEY, VERIFIED_TOKENS_KEPT
from mcpgov.surface import split_name
from mcpgov.tasks import is_task_message
from mcpgov.upstream import UpstreamError

if TYPE_CHECKING:
    from mcpgov.gateway import Gateway

log = logging.getLogger("mcpgov.gateway")

_REQUEST_KEYS = frozenset({"jsonrpc", "id", "method", "params"})


def plain_tools_call(body: bytes) -> dict[str, Any] | None:
    """The JSON-RPC message when ``body`` is one plain ``tools/call`` request the fast path may take."""
    if b'"tools/call"' not in body or len(body) > DEFAULT_MAX_REQUEST_BODY_SIZE:
        return None
    try:
        msg = parse_body(body)
    except ValueError:
        return None
    if not isinstance(msg, dict) or msg.get("method") != "tools/call" or msg.get("jsonrpc") != "2.0":
        return None
    if not _REQUEST_KEYS.issuperset(msg) or type(msg.get("id")) not in (int, str):
        return None
    params = msg.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("name"), str) or "_meta" in params:
        return None  # progress tokens, run ids, role requests, trace context: the SDK path handles those
    if not {"name", "arguments"}.issuperset(params):
        return None
    arguments = params.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        return None
    return msg


def task_message(body: bytes) -> dict[str, Any] | None:
    """The JSON-RPC message when ``body`` is one task request (``tasks/*``, task-augmented ``tools/call``)."""
    if (b'"tasks/' not in body and b'"task"' not in body) or len(body) > DEFAULT_MAX_REQUEST_BODY_SIZE:
        return None
    try:
        msg = parse_body(body)
    except ValueError:
        return None
    return msg if is_task_message(msg) and _REQUEST_KEYS.issuperset(msg) else None


class _HeaderMap(Headers):
    """Starlette's request headers with each look-up in a dict built once from the raw list.

    Starlette scans and decodes the raw list on every look-up; the fast path and the SDK checks it
    calls (transport security, ``Accept``, ``Content-Type``, the bearer backend, the session) look up
    about ten per POST. Same answers: a name repeated answers its first value, as Starlette's scan
    does, and the look-up lower-cases the name asked for and compares it with the raw name as sent.
    """

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        super().__init__(raw=raw)
        first: dict[str, str] = {}
        for name, value in raw:
            first.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        self._first = first

    def __getitem__(self, key: str) -> str:
        return self._first[key.lower()]

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self._first.get(key.lower(), default)

    def __contains__(self, key: Any) -> bool:
        return key.lower() in self._first


class _Backend(BearerAuthBackend):
    """The SDK's bearer backend: :meth:`authenticate` takes its steps in its order, on the fast path's
    header map, with what depends on nothing but immutable inputs computed once.

    The SDK's version decodes every header name to find ``Authorization``, parses the token's resource
    as a URL (``_issued_for_this_resource``, a function of that string and this gateway's resource URL
    only, the same string for every token) and builds the credentials and user objects, on every
    request. Here the header is looked up by its (lower-case, as uvicorn delivers it) name; a header
    not found that way is simply not taken (the request goes to the SDK, which decides); the resource
    verdict is remembered per resource string; the credentials and user are remembered per
    ``AccessToken`` object (the same object comes back only for the same identity:
    ``_SdkTokenVerifier``). ``tests/mcpgov/test_http_server.py`` compares it with the SDK's backend.
    """

    def __init__(self, token_verifier: Any, *, resource_server_url: Any = None) -> None:
        super().__init__(token_verifier, resource_server_url=resource_server_url)
        self._issued: dict[str | None, bool] = {}
        self._users: dict[int, tuple[Any, Any]] = {}

    async def authenticate(self, conn: Any) -> Any:
        auth_header = conn.headers.get("authorization")
        if not auth_header or auth_header[:7].lower() != "bearer ":
            return None
        auth_info = await self.token_verifier.verify_token(auth_header[7:])
        if not auth_info:
            return None
        if auth_info.expires_at and auth_info.expires_at < int(time.time()):
            return None
        if self.resource_server_url and not self._issued_for_this_resource(auth_info.resource):
            log.warning(
                "Bearer token resource %r is not resource_server_url %s",
                auth_info.resource,
                self.resource_server_url,
            )
            return None
        known = self._users.get(id(auth_info))
        if known is None or known[0] is not auth_info:  # the entry holds the token: its id is not reused
            known = (auth_info, (AuthCredentials(auth_info.scopes), AuthenticatedUser(auth_info)))
            if len(self._users) >= VERIFIED_TOKENS_KEPT:
                del self._users[next(iter(self._users))]
            self._users[id(auth_info)] = known
        return known[1]

    def _issued_for_this_resource(self, resource: str | None) -> bool:
        known = self._issued.get(resource)
        if known is None:
            known = super()._issued_for_this_resource(resource)
            if len(self._issued) < 64:  # a verifier sets one resource; bounded whatever it does
                self._issued[resource] = known
        return known


class FastHttpCalls:
    """Answers plain ``tools/call`` POSTs of live SDK sessions; :meth:`handle` False means "the SDK's"."""

    def __init__(self, gateway: Gateway, *, token_verifier: Any = None, resource: str | None = None) -> None:
        self.gateway = gateway
        self.manager = gateway.server._session_manager
        self.enabled = os.environ.get("MCPGOV_FAST_PATH", "1") != "0"
        gateway.tasks.served = True  # task messages are answered here (on both settings)
        gateway.tasks.notify = gateway.tasks.notify_peer  # status notifications: the agent's GET stream
        self.backend: _Backend | None = None
        if token_verifier is not None:
            from pydantic import AnyHttpUrl

            # the SDK's bearer backend (its steps: _Backend), set up as Server.streamable_http_app sets it up
            self.backend = _Backend(
                token_verifier, resource_server_url=AnyHttpUrl(resource) if resource else None
            )
        # calls to servers that may ask the agent something, and the agent's answers (mcpgov.fast_http_stream)
        self.streams = StreamingCalls(self)

    def _may_ask_the_agent(self, name: str) -> bool:
        """Whether the tool's server may send the agent a sampling, elicitation or roots request mid-call.

        Such a request travels on the SSE stream of the agent's request: those calls take the streaming
        path (:mod:`mcpgov.fast_http_stream`), which answers JSON or opens that stream.
        """
        parts = split_name(name)
        if parts is None:
            return False  # unknown name: refused the same way on both paths
        policy = self.gateway.policy
        if policy is None:
            return False
        asks = policy.rule(parts[0]).server_requests
        return bool(asks.sampling or asks.elicitation or asks.elicitation_url_domains or asks.roots)

    async def handle(self, scope: dict[str, Any], body: bytes, send: Any, receive: Any = None) -> bool:
        task = task_message(body)  # always ours: the SDK 2.3 cannot carry tasks (mcpgov.tasks)
        answer = None  # the agent's answer to a request the streaming path put to it
        streaming = False
        if task is not None:
            msg = task
            meta = msg.get("params", {}).get("_meta") if isinstance(msg.get("params"), dict) else None
            meta = meta if isinstance(meta, dict) else None
        else:
            if not self.enabled:
                return False
            msg = plain_tools_call(body)
            if msg is None:
                answer = agent_answer(body)
                if answer is None:
                    return False
                msg = answer
            elif self._may_ask_the_agent(msg["params"]["name"]):
                if receive is None:
                    return False
                streaming = True
            meta = None
        request = Request(scope)
        headers = request._headers = _HeaderMap(scope["headers"])
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
        sid = headers.get(MCP_SESSION_ID_HEADER)
        if version is None or version not in HANDSHAKE_PROTOCOL_VERSIONS or sid is None:
            return False
        if streaming and self.streams.connection(sid) is None:
            return False  # the agent's declared capabilities are not known here: the SDK's
        transport = self.manager._server_instances.get(sid)
        if transport is None or transport.is_terminated or transport.is_json_response_enabled:
            return False
        idle = transport.idle_scope
        if idle is not None and idle.cancel_called:
            return False
        # the transport's checks, in its order: DNS-rebinding protection, Accept, Content-Type
        if await transport._security.validate_request(request, is_post=True) is not None:
            return False
        has_json, has_sse = check_accept_headers(request)
        if not (has_json and has_sse):
            return False
        content_type = headers.get("content-type", "")
        if CONTENT_TYPE_JSON not in (p.strip() for p in content_type.split(";")[0].split(",")):
            return False
        user = None
        if self.backend is not None:
            # a Request is an HTTPConnection: its headers, parsed once above, are the ones checked
            auth = await self.backend.authenticate(request)
            if auth is None:
                return False  # the SDK answers 401 with its WWW-Authenticate challenge
            user = auth[1]
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        if requestor != self.manager._session_owners.get(sid):
            return False  # the SDK answers 404, as if the session did not exist
        if answer is not None:  # only an answer this session owes goes on; anything else is the SDK's
            return await self.streams.deliver(sid, answer, send)
        ctx = SimpleNamespace(
            request=SimpleNamespace(scope={**scope, "user": user}, headers=headers), meta=meta
        )
        try:
            sess = self.gateway.session_for(ctx)  # type: ignore[arg-type]
        except MCPError as exc:
            if task is None:
                return False  # refused role or environment: the SDK path refuses it the same way
            # the SDK would answer "method not found" before the role: the refusal is said here
            error = {"code": exc.error.code, "message": exc.error.message}
            await self._answer(send, sid, {"jsonrpc": "2.0", "id": msg["id"], "error": error})
            return True
        # a request in flight holds the session, as in StreamableHTTPServerTransport.handle_request
        if idle is not None:
            transport._requests_in_flight += 1
            idle.deadline = math.inf
        try:
            if task is not None:
                response = await self.gateway.tasks.handle(sess, msg)
                if isinstance(response.get("result"), dict):
                    result = response["result"]
                    result["_meta"] = {**(result.get("_meta") or {}), RUN_META_KEY: sess.run_id}
            elif streaming:
                await self.streams.call(sess, msg, sid, send, receive)
                return True
            else:
                response = await self._call(sess, msg, sid)
        finally:
            if idle is not None:
                transport._requests_in_flight -= 1
                if not transport._requests_in_flight and transport._idle_timeout is not None:
                    idle.deadline = anyio.current_time() + transport._idle_timeout
        await self._answer(send, sid, response)
        return True

    @staticmethod
    async def _answer(send: Any, sid: str, response: dict[str, Any]) -> None:
        payload = json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (MCP_SESSION_ID_HEADER.encode(), sid.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _call(self, sess: Any, msg: dict[str, Any], sid: str) -> dict[str, Any]:
        request_id = msg["id"]
        params = msg["params"]
        name = params["name"]
        log.debug("HTTP fast path: tools/call %s", name)
        try:
            result = await self.gateway.execute(
                sess, name, params.get("arguments"), meta=None, request_id=request_id, transport_session=sid
            )
        except UpstreamError as exc:
            error = {k: v for k, v in exc.error.items() if k in ("code", "message", "data")}
            error.setdefault("message", "")
            return {"jsonrpc": "2.0", "id": request_id, "error": error}
        except Exception as exc:  # never leave the agent without an answer
            log.exception("tools/call %s failed inside the gateway", name)
            return {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {"code": types.INTERNAL_ERROR, "message": str(exc)},
            }
        meta = dict(result.get("_meta") or {})
        meta[RUN_META_KEY] = sess.run_id
        return {"jsonrpc": "2.0", "id": request_id, "result": {**result, "_meta": meta}}
