"""``mcpgov gateway``: process start-up (first bundle, environment gate, options) and the two transports.

stdio (with the fast path of :mod:`mcpgov.fast_stdio` when stdin and stdout are pipes) or streamable
HTTP; the call path itself is :class:`mcpgov.gateway.Gateway`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE

from mcpgov.audit import atomic_write_json
from mcpgov.bundle_manager import BundleManager
from mcpgov.config import ConfigError, UpstreamConfig, check_known_servers, load_mcp_config
from mcpgov.decision import compile_policy
from mcpgov.gate import environment_gate, gate_report
from mcpgov.gateway import Gateway, GatewayOptions, end_session_record
from mcpgov.identity import VERIFIED_TOKENS_KEPT, AgentVerifier, PinnedKeys, TokenRejected, local_identity
from mcpgov.portal_client import PortalClient, PortalError
from mcpgov.verify import VerifiedBundle

log = logging.getLogger("mcpgov.gateway")

EXIT_CREDENTIALS = 2
EXIT_GATE_FAILED = 3
EXIT_NO_BUNDLE = 4
LOOPBACK = ("127.0.0.1", "localhost", "::1")
GIL_SWITCH_INTERVAL = 0.0005  # seconds (CPython's default: 0.005)


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


SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
DELIVERY_SECONDS = 10.0  # at a clean stop: how long events and end reports may take to reach the portal
HTTP_GRACE_SECONDS = 5  # at a clean stop: how long open HTTP requests may take to finish


def run_gateway_cli(args: argparse.Namespace) -> int:
    from mcpgov.policy_source import PolicySourceError, make_manager, read_token

    logging.basicConfig(
        level=os.environ.get("MCPGOV_LOG_LEVEL", "WARNING"),
        stream=sys.stderr,
        format="mcpgov %(levelname)s %(name)s: %(message)s",
    )
    if not args.role:
        print("gateway needs --role", file=sys.stderr)
        return 2
    from mcpgov.metrics import MetricsAddressError, parse_address
    from mcpgov.tracing import configure_from_env

    if args.metrics:
        try:
            parse_address(args.metrics, public=args.metrics_public)
        except MetricsAddressError as exc:
            print(f"mcpgov gateway: {exc}", file=sys.stderr)
            return 2
    try:
        read_token(args)
    except PolicySourceError as exc:
        print(f"mcpgov gateway: {exc}", file=sys.stderr)
        return 2
    if args.bundle_file and args.portal:
        print("mcpgov gateway: give --bundle-file or --portal, not both", file=sys.stderr)
        return 2
    if not args.bundle_file and not (args.portal and args.token):
        print(
            "mcpgov gateway: give --bundle-file, or --portal and --token (or --token-file)", file=sys.stderr
        )
        return 2
    if args.http:
        _, sep, port = args.http.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            print(
                f"mcpgov gateway: --http {args.http}: expected HOST:PORT (e.g. 127.0.0.1:8765)",
                file=sys.stderr,
            )
            return 2
    if args.idle_timeout is not None and args.idle_timeout <= 0:
        print("mcpgov gateway: --idle-timeout must be a positive number of seconds", file=sys.stderr)
        return 2
    if not args.state_dir:
        args.state_dir = os.path.join(args.spool, "..", "state") if args.spool else "var/mcpgov/state"
    upstreams: dict[str, UpstreamConfig] | None = None
    extra: tuple[str, ...] = ()
    try:
        bundles = make_manager(args)
        if args.config:
            upstreams, extra = load_mcp_config(args.config, environment=args.env)
    except (PolicySourceError, ConfigError) as exc:
        print(f"mcpgov gateway: {exc}", file=sys.stderr)
        return 2
    configure_from_env()  # OpenTelemetry traces when OTEL_* asks for an exporter
    # the audit shipper's thread (JSON, HTTP to the portal) must not hold the event loop's calls for
    # CPython's default 5 ms before it hands the GIL over
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    # one event loop for everything: the portal client's connections belong to it
    return anyio.run(_gateway_main, args, bundles, upstreams, extra, backend_options=event_loop_options())


class Shutdown:
    """How the gateway stops: the first SIGTERM / SIGINT / SIGHUP asks for a clean stop, a second one exits.

    A clean stop ends the transport (stdio: stop reading; HTTP: uvicorn's graceful shutdown), then the
    gateway ends every session, delivers the spool and the end reports within ``DELIVERY_SECONDS`` and
    exits 0. Whatever was not delivered stays in the spool for the next gateway (restart recovery).
    """

    def __init__(self) -> None:
        self.main = anyio.CancelScope()  # everything: a signal during start-up just stops
        self.serving: anyio.CancelScope | None = None  # stdio: the agent conversation
        self.http: Any = None  # uvicorn.Server
        self.signal: int | None = None

    def request(self) -> None:
        if self.http is not None:
            self.http.should_exit = True
        elif self.serving is not None:
            self.serving.cancel()
        else:
            self.main.cancel()

    async def watch(self, gateway_ref: list[Gateway]) -> None:
        with anyio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.signal is not None:
                    log.error("%s again: exiting at once (undelivered events stay in the spool)", name)
                    os._exit(128 + signum)
                self.signal = signum
                log.warning("%s: ending the sessions, delivering the audit spool, then exiting", name)
                for gateway in gateway_ref:
                    gateway.stop_reason = f"gateway stopped ({name})"
                self.request()


class AuthenticationFailed(Exception):
    """The portal refused this gateway's token (401 / 403): it must not start on a cached bundle either."""


def metrics_serve(gateway: Gateway, args: argparse.Namespace):
    """``--metrics HOST:PORT``: the Prometheus endpoint (:mod:`mcpgov.metrics`); returns its stop function."""
    if not getattr(args, "metrics", None):
        return lambda: None
    from mcpgov.metrics import GatewayMetrics, parse_address

    host, port = parse_address(args.metrics, public=args.metrics_public)
    gateway.observer.metrics = GatewayMetrics(gateway)
    return gateway.observer.metrics.serve(host, port)


async def _first_bundle(args: argparse.Namespace, bundles: BundleManager) -> VerifiedBundle | None:
    from mcpgov.portal_client import PortalError
    from mcpgov.verify import BundleVerificationError

    if args.bundle_file:
        bundles.load_file(args.bundle_file)  # raises BundleVerificationError / OSError
        return bundles.enforced
    bundles.load_cache()
    try:
        with anyio.move_on_after(10):
            await bundles.refresh()
            if bundles.current is not None:
                await bundles.refresh()  # a flags update newer than that bundle, if the portal has one
    except BundleVerificationError:
        pass  # logged loudly by the manager; never used
    except PortalError as exc:
        if exc.is_auth_failure:
            raise AuthenticationFailed(exc.auth_failure(args.portal)) from exc
        log.error("the portal answered %s at start; using the cached bundle if any", exc)
    except Exception as exc:
        log.error("portal unreachable at start (%s); using the cached bundle if any", exc)
    return bundles.enforced


async def _gateway_main(
    args: argparse.Namespace,
    bundles: BundleManager,
    upstreams: dict[str, UpstreamConfig] | None,
    extra: tuple[str, ...],
) -> int:
    shutdown = Shutdown()
    gateway_ref: list[Gateway] = []
    code = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(shutdown.watch, gateway_ref)
        with shutdown.main:
            code = await _gateway_run(args, bundles, upstreams, extra, shutdown, gateway_ref)
        tg.cancel_scope.cancel()
    if shutdown.signal is not None:
        log.warning("stopped cleanly after %s", signal.Signals(shutdown.signal).name)
    return code


async def _gateway_run(
    args: argparse.Namespace,
    bundles: BundleManager,
    upstreams: dict[str, UpstreamConfig] | None,
    extra: tuple[str, ...],
    shutdown: Shutdown,
    gateway_ref: list[Gateway],
) -> int:
    from mcpgov.verify import BundleVerificationError

    portal = PortalClient(args.portal, args.token) if not args.bundle_file else None
    bundles.client = portal
    try:
        if portal is not None:
            refused = await check_client(portal, args)
            if refused:
                print(f"mcpgov gateway: {refused}", file=sys.stderr)
                return EXIT_CREDENTIALS
        if args.http:
            host = args.http.rpartition(":")[0] or "127.0.0.1"
            if host not in LOOPBACK and not (args.portal or args.issuer):
                print(
                    f"mcpgov gateway: refusing to serve HTTP on {host} without agent authentication "
                    "(give --portal, or --issuer with --bundle-file)",
                    file=sys.stderr,
                )
                return EXIT_CREDENTIALS
        try:
            verified = await _first_bundle(args, bundles)
        except AuthenticationFailed as exc:
            print(f"mcpgov gateway: {exc}", file=sys.stderr)
            return 2
        except BundleVerificationError as exc:
            print(f"mcpgov gateway: bundle rejected: {exc.code}: {exc.message}", file=sys.stderr)
            return EXIT_NO_BUNDLE
        except OSError as exc:
            print(f"mcpgov gateway: {exc}", file=sys.stderr)
            return EXIT_NO_BUNDLE
        if verified is None:
            print(
                "mcpgov gateway: no verified bundle (portal unreachable and nothing cached): refusing to start",
                file=sys.stderr,
            )
            return EXIT_NO_BUNDLE
        if upstreams is None:
            upstreams = upstreams_from_bundle(verified, args.role)
        else:
            try:
                check_known_servers(
                    upstreams, verified.bundle.servers, source=args.config, version=verified.version
                )
            except ConfigError as exc:
                print(f"mcpgov gateway: {exc}", file=sys.stderr)
                return 2
        violations = environment_gate(verified.bundle, args.role, upstreams, extra_forbidden_patterns=extra)
        print(gate_report(verified.bundle, args.role, upstreams, violations), file=sys.stderr)
        # an expired bundle alone does not stop the start: the gateway serves and fails closed on every call
        if any(v.server != "(bundle)" for v in violations):
            if portal is not None:
                await report_refused_start(portal, args, verified, upstreams, violations)
            return EXIT_GATE_FAILED
        options = GatewayOptions(
            environment=args.env,
            role=args.role,
            read_only=True if args.read_only is None else args.read_only,
            declared_large_data=bool(args.declare_large_data),
            spool_dir=Path(args.spool or "var/mcpgov/spool"),
            agent=args.agent or "",
            default_timeout=args.default_timeout,
            approval_timeout=args.approval_timeout,
            upstream_mode=args.upstream_mode,
            durability=args.durability,
            human_log=args.audit_log,
            bundle_file=args.bundle_file,
        )
        options.require_agent = bool(args.http and (args.portal or args.issuer))
        gateway = Gateway(options, bundles, upstreams, portal)
        stop_metrics = metrics_serve(gateway, args)
        gateway_ref.append(gateway)
        if args.http:
            host, _, port = args.http.rpartition(":")
            host = host or "127.0.0.1"
            auth = None
            if options.require_agent:
                resource = args.resource or f"http://{host}:{port}/mcp"
                auth = HttpAuth(
                    issuer=args.issuer or args.portal,
                    resource=resource,
                    verifier=AgentVerifier(
                        keys=PinnedKeys(args.keys, bundles.keys),
                        issuer=args.issuer or args.portal,
                        resource=resource,
                        team=lambda: gateway.verified.bundle.team,
                        # the frozen bundle's own tuple: a verified token is remembered against it
                        agents=lambda: gateway.verified.bundle.agents,
                    ),
                )
            else:
                log.warning("HTTP on loopback WITHOUT agent authentication (no --portal or --issuer)")
            await serve_http(
                gateway, host, int(port), auth=auth, shutdown=shutdown, idle_timeout=args.idle_timeout
            )
        else:
            await serve_stdio(gateway, shutdown=shutdown)
        stop_metrics()
        return 0
    finally:
        if portal is not None:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await portal.aclose()


def _cached_whoami(
    cache: Path, token_hash: str, args: argparse.Namespace, exc: Exception
) -> dict | str | None:
    """The portal is down at start: the identity cached for this token, a refusal, or None (no cache at all)."""
    try:
        cached = json.loads(cache.read_text())
    except (OSError, ValueError):
        cached = None
    if not isinstance(cached, dict) or cached.get("token_sha256") != token_hash:
        if (Path(args.state_dir) / "bundle.jws").exists():
            return (
                f"portal unreachable at start ({exc.__class__.__name__}) and no identity of this token "
                "cached: refusing to serve the cached bundle on an unchecked token"
            )
        return None
    log.error("portal unreachable at start (%s); using the cached client identity", exc)
    return cached["whoami"]


async def check_client(portal: PortalClient, args: argparse.Namespace) -> str | None:
    """Ask the portal who this enforcement client is; a refusal message, or None to go on.

    A wrong or revoked token refuses the start even with a cached bundle. The role must be one the
    client may enforce. Portal unreachable: the whoami cached by the last start with the same token
    (its SHA-256 in ``state_dir/whoami.json``) stands in; none cached → start only if the bundle
    cache does not exist either (the start then fails for want of a bundle) — never on trust.
    """
    token_hash = hashlib.sha256(args.token.encode()).hexdigest()
    cache = Path(args.state_dir) / "whoami.json"
    try:
        with anyio.fail_after(10):
            who = await portal.whoami()
    except PortalError as exc:
        if exc.is_auth_failure:
            with contextlib.suppress(OSError):
                cache.unlink()
            return exc.auth_failure(args.portal)
        if exc.status < 500 and exc.status != 429:
            return f"the portal refused whoami: {exc}"
        # 5xx / 429: an outage like no answer at all (below)
        who = _cached_whoami(cache, token_hash, args, exc)
    except Exception as exc:
        who = _cached_whoami(cache, token_hash, args, exc)
    else:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cache, {"token_sha256": token_hash, "whoami": who})
    if isinstance(who, str) or who is None:
        return who
    if who.get("revoked"):
        return "this enforcement client is revoked on the portal"
    roles = list(who.get("roles") or ())
    if args.role not in roles:
        return (
            f"this enforcement client may not enforce role {args.role!r} "
            f"(allowed: {', '.join(roles) or 'none'})"
        )
    env = who.get("environment")
    if env and args.env and env != args.env:
        return f"this enforcement client belongs to environment {env!r}, not {args.env!r}"
    return None


async def report_refused_start(
    portal: PortalClient,
    args: argparse.Namespace,
    verified: VerifiedBundle,
    upstreams: dict[str, UpstreamConfig],
    violations: list[Any],
) -> None:
    """A start refused at the environment gate is a session in state ``refused`` on the portal."""
    meta = {
        "id": str(uuid.uuid4()),
        "role": args.role,
        "state": "refused",
        "read_only": True if args.read_only is None else args.read_only,
        "declared_large_data": bool(args.declare_large_data),
        "agent": local_identity(args.agent or "").as_meta(),
        "started_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "bundle_version": verified.version,
        "gate_report": {
            "environment": args.env,
            "servers": sorted(upstreams)[:50],
            "violations": [{"server": v.server, "reason": v.reason[:300]} for v in violations[:20]],
            "report": gate_report(verified.bundle, args.role, upstreams, violations)[:6000],
        },
    }
    try:
        with anyio.fail_after(5):
            await portal.open_session(meta)
    except Exception as exc:
        log.error("could not record the refused start on the portal: %s", exc)
    else:
        print(
            f"mcpgov gateway: refused start recorded on the portal as session {meta['id']}", file=sys.stderr
        )


async def serve_stdio(gateway: Gateway, *, shutdown: Shutdown | None = None) -> None:
    """One agent session on stdin/stdout; it ends when stdin closes (EOF) or a signal stops the gateway."""
    from mcp.server.stdio import stdio_server

    from mcpgov import fast_stdio
    from mcpgov.tasks import StdioTasks

    serving = anyio.CancelScope()
    async with gateway.running():
        gateway.open_session("stdio")
        gateway.stop_reason = "the agent closed the connection"
        if shutdown is not None:
            if shutdown.signal is not None:
                return
            shutdown.serving = serving
        server = gateway.server
        with serving:
            if fast_stdio.available():
                fast = fast_stdio.FastCalls(gateway)
                # task messages are the gateway's on every path: the SDK 2.3 cannot carry them (mcpgov.tasks)
                tasks = StdioTasks(gateway)

                def initialized() -> None:
                    fast.enabled = os.environ.get("MCPGOV_FAST_PATH", "1") != "0"
                    tasks.enabled = True

                def intercept(line: bytes) -> bool:
                    return tasks.intercept(line) or fast.intercept(line)

                async with fast_stdio.pipe_stdio(intercept, initialized) as (stdin, stdout):
                    fast.wire = tasks.wire = stdout.writer
                    async with stdio_server(stdin, stdout) as (r, w):  # type: ignore[arg-type]
                        await server.run(r, w, server.create_initialization_options())
            else:  # stdin or stdout is a regular file: the SDK's threaded streams
                async with stdio_server() as (r, w):
                    await server.run(r, w, server.create_initialization_options())
        if shutdown is not None and shutdown.signal is not None:
            gateway.stop_reason = f"gateway stopped ({signal.Signals(shutdown.signal).name})"


class _Uvicorn:
    """uvicorn's server without its own signal handlers: :class:`Shutdown` owns SIGTERM/SIGINT/SIGHUP."""

    @staticmethod
    def make(config: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # type: ignore[override]
                yield

        return Server(config)


def end_http_session(gateway: Gateway, transport_session_id: str, reason: str) -> None:
    """A 2025-11-25 HTTP session is over (DELETE, closed stream, idle): end the governance sessions it ran.

    Those are the sessions whose run id is that ``Mcp-Session-Id`` (the run of a client that names no
    run of its own; ``Gateway.session_for``). Runs a client names itself outlive any one transport
    session. Each spool is closed at once; the shipper delivers the rest of its events and the end
    report like any spool no gateway holds (with the reason recorded here).
    """
    suffix = f"|{transport_session_id}"
    gateway.surface.connections.pop(transport_session_id, None)
    for key in [k for k in gateway.sessions if k.endswith(suffix)]:
        sess = gateway.sessions.pop(key)
        end_session_record(sess, reason)
        sess.spool.close()
        log.warning("session %s ended: %s", sess.id, reason)
    if gateway.shipper is not None:
        gateway.shipper.nudge()


async def _end_idle_runs(gateway: Gateway, idle_timeout: float) -> None:
    """End governance sessions no request has used for ``idle_timeout`` seconds.

    A 2026-07-28 client is stateless: no transport session ends, so without this its runs (and their
    spools) would stay open until the gateway stops. Legacy sessions end with their transport too.
    """
    while True:
        await anyio.sleep(max(0.5, min(30.0, idle_timeout / 3)))
        cutoff = time.monotonic() - idle_timeout
        for key, sess in list(gateway.sessions.items()):
            if key != "stdio" and sess.last_active < cutoff and not sess.approvals:
                gateway.sessions.pop(key, None)
                end_session_record(sess, f"idle for {idle_timeout:g}s")
                sess.spool.close()
                log.warning("session %s ended: idle for %gs", sess.id, idle_timeout)
        if gateway.shipper is not None:
            gateway.shipper.nudge()


def _end_sessions_with_their_transport(
    gateway: Gateway, idle_timeout: float | None, shutdown: Shutdown | None
) -> None:
    """Hook the SDK session manager's discard (one place for DELETE, idle timeout and crash) to end ours.

    ``_session_manager`` / ``_discard_session`` are the SDK's (mcp 2.3): the manager has no public
    "session closed" callback; ``tests/mcpgov/test_lifecycle.py`` fails if this stops working.
    """
    manager = gateway.server._session_manager
    discard = manager._discard_session

    async def discard_and_end(session_id: str, transport: Any) -> None:
        await discard(session_id, transport)
        if shutdown is not None and shutdown.signal is not None:
            return  # the gateway's own stop ends every session with its reason
        idle = transport.idle_scope is not None and transport.idle_scope.cancel_called
        reason = f"idle for {idle_timeout:g}s" if idle else "the agent closed the session"
        end_http_session(gateway, session_id, reason)

    manager._discard_session = discard_and_end


@dataclass
class HttpAuth:
    """The HTTP agent endpoint as an OAuth 2.1 protected resource (RFC 9728 metadata, bearer tokens)."""

    issuer: str
    resource: str
    verifier: AgentVerifier


class _SdkTokenVerifier:
    """The SDK's ``TokenVerifier`` on top of :class:`AgentVerifier`: the agent rides in ``claims``.

    The SDK's bearer middleware answers 401 with ``WWW-Authenticate: Bearer error=…,
    resource_metadata="…"`` when this returns None, and binds Mcp-Session-Id sessions to the token's
    principal. The agent's token never leaves the gateway: upstreams get the gateway's own credentials.
    """

    def __init__(self, verifier: AgentVerifier) -> None:
        self.verifier = verifier
        # identity object -> (it, its AccessToken): the verifier hands back the very object it remembered
        # for a token while the same bundle snapshot is enforced, so the model is built once for it
        self._tokens: dict[int, tuple[Any, Any]] = {}

    async def verify_token(self, token: str) -> Any:
        from mcp.server.auth.provider import AccessToken

        try:
            ident = self.verifier.verify(token)
        except TokenRejected as exc:
            log.warning("agent credential refused: %s", exc)
            return None
        known = self._tokens.get(id(ident))
        if known is not None and known[0] is ident:  # the entry holds ident: its id is not reused meanwhile
            return known[1]
        access = AccessToken(
            token="",  # not kept: nothing downstream may pass it on
            client_id=ident.client_id or ident.id,
            scopes=[],
            expires_at=ident.expires_at,
            resource=self.verifier.resource,
            subject=f"agent:{ident.id}",
            claims={"mcpgov_identity": ident},
        )
        if ident.auth == "oauth":  # an API key's identity is built anew for every request: nothing to reuse
            if len(self._tokens) >= VERIFIED_TOKENS_KEPT:  # bounded as the verifier's own memory
                del self._tokens[next(iter(self._tokens))]
            self._tokens[id(ident)] = (ident, access)
        return access


def _body_matches_headers(scope: dict[str, Any], body: bytes) -> str | None:
    """Policy is decided on the JSON body; a mirrored Mcp-Method / Mcp-Name header that disagrees is refused."""
    method_h = name_h = None
    for k, v in scope.get("headers") or ():  # only these two decoded: this runs on every POST
        if k[:4].lower() == b"mcp-":
            k = k.lower()
            if k == b"mcp-method":
                method_h = v.decode("latin-1")
            elif k == b"mcp-name":
                name_h = v.decode("latin-1")
    if method_h is None and name_h is None:
        return None
    from mcpgov.fast_http import parse_body

    try:
        msg = parse_body(body)  # the message the SDK will see
    except ValueError:
        return None  # the SDK answers the parse error
    if not isinstance(msg, dict):
        return None
    if method_h is not None and method_h != msg.get("method"):
        return "Mcp-Method header does not match the request body's method"
    params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
    name = params.get("name") if msg.get("method") in ("tools/call", "prompts/get") else params.get("uri")
    if name_h is not None and name is not None and name_h != name:
        from mcp.shared.inbound import decode_header_value

        if decode_header_value(name_h) != name:
            return "Mcp-Name header does not match the request body"
    return None


def header_guard(app: Any, path: str, fast: Any = None) -> Any:
    """ASGI wrapper: 400 on a header/body mismatch of a POST to the MCP endpoint; the body is replayed.

    At most the SDK's body limit (and one chunk) is read before the SDK sees the request: a larger
    body is handed on unread past that point, and the SDK's ``RequestBodyLimitMiddleware`` answers 413.

    ``fast`` (:class:`mcpgov.fast_http.FastHttpCalls`) may answer the POST itself; otherwise the SDK does.
    """

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") != path:
            await app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
            if (
                size > DEFAULT_MAX_REQUEST_BODY_SIZE
            ):  # read no further: the SDK's limit (http_app keeps it) answers 413
                break
        body = b"".join(chunks)
        problem = None if more else _body_matches_headers(scope, body)
        if problem is not None:
            payload = json.dumps(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": problem}}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return
        if not more and fast is not None and await fast.handle(scope, body, send, receive):
            return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": more}
            return await receive()

        await app(scope, replay, send)

    return guarded


def http_app(gateway: Gateway, host: str, auth: HttpAuth | None, *, idle_timeout: float | None = None) -> Any:
    from mcp.server.transport_security import TransportSecuritySettings

    security = None
    if host not in LOOPBACK:  # the SDK's default already covers loopback
        security = TransportSecuritySettings(
            allowed_hosts=[host, f"{host}:*"], allowed_origins=[f"http://{host}:*"]
        )
    kwargs: dict[str, Any] = {"session_idle_timeout": idle_timeout}
    path = "/mcp"
    resource = None
    if auth is not None:
        from urllib.parse import urlparse

        from mcp.server.auth.routes import create_protected_resource_routes
        from mcp.server.auth.settings import AuthSettings
        from pydantic import AnyHttpUrl

        path = urlparse(auth.resource).path or "/mcp"
        # the audience is checked by AgentVerifier (exact match); the SDK checks AccessToken.resource again
        kwargs["auth"] = AuthSettings(
            issuer_url=auth.issuer, resource_server_url=auth.resource, validate_token_resource=True
        )
        kwargs["token_verifier"] = _SdkTokenVerifier(auth.verifier)
        resource = auth.resource
        # the SDK serves RFC 9728 §3.1's path-inserted URL (…/oauth-protected-resource/mcp); clients
        # that ask at the root get the same document
        root = create_protected_resource_routes(AnyHttpUrl(auth.resource), [AnyHttpUrl(auth.issuer)])[0]
        from starlette.routing import Route

        kwargs["custom_starlette_routes"] = [
            Route("/.well-known/oauth-protected-resource", endpoint=root.endpoint, methods=["GET", "OPTIONS"])
        ]
    app = gateway.server.streamable_http_app(
        streamable_http_path=path, host=host, transport_security=security, **kwargs
    )
    from mcpgov.fast_http import FastHttpCalls

    fast = FastHttpCalls(gateway, token_verifier=kwargs.get("token_verifier"), resource=resource)
    return header_guard(app, path, fast)


# the most a request line and headers may take (nginx's default large_client_header_buffers is 32 KiB)
MAX_REQUEST_HEAD = 64 * 1024


def http_protocol() -> Any:
    """uvicorn's httptools protocol with a bound on the request head, or ``"h11"`` without httptools.

    httptools parses a request ~0.14 ms of CPU faster than h11 here (``bench/http_cpu.py --parsers``),
    but uvicorn sets it no limit on the request line and headers: a client could send megabytes of
    header before anything looks at the request (h11 stops at 16 KiB). This counts the reads that
    end with a request's headers still incomplete and, past :data:`MAX_REQUEST_HEAD` (plus the read
    that began the request), answers ``400`` (uvicorn's own answer to a request it cannot parse) and
    closes the connection.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "h11"

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _in_head = True

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return
            super().data_received(data)
            if self._in_head and not self.transport.is_closing():  # this read did not end the head
                self._head_bytes += len(data)
                if self._head_bytes > MAX_REQUEST_HEAD:
                    self.logger.warning("Request head over %d bytes refused.", MAX_REQUEST_HEAD)
                    self.send_400_response("Request head too large.")

        def on_message_begin(self) -> None:
            self._head_bytes, self._in_head = 0, True
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

    return BoundedHttpToolsProtocol


def uvicorn_config(app: Any, host: str, port: int) -> Any:
    """The gateway's uvicorn settings (also the HTTP pass-through floor's in ``bench/http_floor.py``)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http_protocol(),
        log_level="warning",
        access_log=False,
        # nothing here reads scope["client"] or the scheme: uvicorn's default would rewrite them from
        # X-Forwarded-For/-Proto sent by any local process (it trusts 127.0.0.1), a middleware per request
        proxy_headers=False,
        server_header=False,  # the Date header stays (RFC 9110 §6.6.1); naming the server helps nobody
        timeout_graceful_shutdown=HTTP_GRACE_SECONDS,
    )


async def serve_http(
    gateway: Gateway,
    host: str,
    port: int,
    *,
    auth: HttpAuth | None = None,
    shutdown: Shutdown | None = None,
    idle_timeout: float | None = 900.0,
) -> None:
    async with gateway.running():
        app = http_app(gateway, host, auth, idle_timeout=idle_timeout)
        _end_sessions_with_their_transport(gateway, idle_timeout, shutdown)
        if idle_timeout is not None:
            gateway.tg.start_soon(_end_idle_runs, gateway, idle_timeout)
        server = _Uvicorn.make(uvicorn_config(app, host, port))
        gateway.stop_reason = "gateway stopped"
        if shutdown is not None:
            if shutdown.signal is not None:
                return
            shutdown.http = server
        await server.serve()
        if shutdown is not None and shutdown.signal is not None:
            gateway.stop_reason = f"gateway stopped ({signal.Signals(shutdown.signal).name})"


def event_loop_options() -> dict[str, Any]:
    """uvloop when it is installed (it comes with ``uvicorn[standard]``) unless ``MCPGOV_UVLOOP=0``."""
    if os.environ.get("MCPGOV_UVLOOP", "1") == "0":
        return {}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}
