"""``mcpgov gateway``: process start-up (first bundle, environment gate, options) and the two transports.

stdio (with the fast path of :mod:`mcpgov.fast_stdio` when stdin and stdout are pipes) or streamable
HTTP; the call path itself is :class:`mcpgov.gateway.Gateway`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio

from mcpgov.bundle_manager import BundleManager
from mcpgov.config import ConfigError, UpstreamConfig, check_known_servers, load_mcp_config
from mcpgov.decision import compile_policy
from mcpgov.gate import environment_gate, gate_report
from mcpgov.gateway import Gateway, GatewayOptions, end_session_record
from mcpgov.portal_client import PortalClient
from mcpgov.verify import VerifiedBundle

log = logging.getLogger("mcpgov.gateway")

EXIT_GATE_FAILED = 3
EXIT_NO_BUNDLE = 4


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
    # one event loop for everything: the portal client's connections belong to it
    return anyio.run(_gateway_main, args, bundles, upstreams, extra)


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
        return bundles.current
    bundles.load_cache()
    try:
        with anyio.move_on_after(10):
            await bundles.refresh()
    except BundleVerificationError:
        pass  # logged loudly by the manager; never used
    except PortalError as exc:
        if exc.status in (401, 403):
            raise AuthenticationFailed(
                f"authentication failed: the portal at {args.portal} refused the enforcement client's token "
                f"({exc.status} {exc.code}: {exc.detail}); check --token / --token-file"
            ) from exc
        log.error("the portal answered %s at start; using the cached bundle if any", exc)
    except Exception as exc:
        log.error("portal unreachable at start (%s); using the cached bundle if any", exc)
    return bundles.current


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
        gateway = Gateway(options, bundles, upstreams, portal)
        stop_metrics = metrics_serve(gateway, args)
        gateway_ref.append(gateway)
        if args.http:
            host, _, port = args.http.rpartition(":")
            await serve_http(
                gateway, host or "127.0.0.1", int(port), shutdown=shutdown, idle_timeout=args.idle_timeout
            )
        else:
            await serve_stdio(gateway, shutdown=shutdown)
        stop_metrics()
        return 0
    finally:
        if portal is not None:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await portal.aclose()


async def serve_stdio(gateway: Gateway, *, shutdown: Shutdown | None = None) -> None:
    """One agent session on stdin/stdout; it ends when stdin closes (EOF) or a signal stops the gateway."""
    from mcp.server.stdio import stdio_server

    from mcpgov import fast_stdio

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

                def initialized() -> None:
                    fast.enabled = os.environ.get("MCPGOV_FAST_PATH", "1") != "0"

                async with fast_stdio.pipe_stdio(fast.intercept, initialized) as (stdin, stdout):
                    fast.wire = stdout.writer
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


def end_http_session(gateway: Gateway, key: str, reason: str) -> None:
    """An HTTP agent session is over (DELETE, closed stream, idle): record its end and hand it to the shipper.

    The spool is closed at once; the shipper delivers the rest of its events and the end report like any
    spool no gateway holds (with the reason recorded here).
    """
    sess = gateway.sessions.pop(key, None)
    if sess is None:
        return
    end_session_record(sess, reason)
    sess.spool.close()
    log.warning("session %s ended: %s", sess.id, reason)
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


async def serve_http(
    gateway: Gateway,
    host: str,
    port: int,
    *,
    shutdown: Shutdown | None = None,
    idle_timeout: float | None = 900.0,
) -> None:
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    async with gateway.running():
        security = None
        if host not in ("127.0.0.1", "localhost", "::1"):  # the SDK's default already covers loopback
            security = TransportSecuritySettings(
                allowed_hosts=[host, f"{host}:*"], allowed_origins=[f"http://{host}:*"]
            )
        app = gateway.server.streamable_http_app(
            streamable_http_path="/mcp",
            host=host,
            transport_security=security,
            session_idle_timeout=idle_timeout,
        )
        _end_sessions_with_their_transport(gateway, idle_timeout, shutdown)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=HTTP_GRACE_SECONDS,
        )
        server = _Uvicorn.make(config)
        gateway.stop_reason = "gateway stopped"
        if shutdown is not None:
            if shutdown.signal is not None:
                return
            shutdown.http = server
        await server.serve()
        if shutdown is not None and shutdown.signal is not None:
            gateway.stop_reason = f"gateway stopped ({signal.Signals(shutdown.signal).name})"
