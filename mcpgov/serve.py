"""``mcpgov gateway``: process start-up (first bundle, environment gate, options) and the two transports.

stdio (with the fast path of :mod:`mcpgov.fast_stdio` when stdin and stdout are pipes) or streamable
HTTP; the call path itself is :class:`mcpgov.gateway.Gateway`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

import anyio

from mcpgov.bundle_manager import BundleManager
from mcpgov.config import UpstreamConfig, load_mcp_config
from mcpgov.decision import compile_policy
from mcpgov.gate import environment_gate, gate_report
from mcpgov.gateway import Gateway, GatewayOptions
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


def run_gateway_cli(args: argparse.Namespace) -> int:
    from mcpgov.policy_source import PolicySourceError, make_manager

    logging.basicConfig(
        level=os.environ.get("MCPGOV_LOG_LEVEL", "WARNING"),
        stream=sys.stderr,
        format="mcpgov %(levelname)s %(name)s: %(message)s",
    )
    if not args.role:
        print("gateway needs --role", file=sys.stderr)
        return 2
    if not args.bundle_file and not (args.portal and args.token):
        print("mcpgov gateway: give --bundle-file, or --portal and --token", file=sys.stderr)
        return 2
    from mcpgov.metrics import MetricsAddressError, parse_address
    from mcpgov.tracing import configure_from_env

    if args.metrics:
        try:
            parse_address(args.metrics, public=args.metrics_public)
        except MetricsAddressError as exc:
            print(f"mcpgov gateway: {exc}", file=sys.stderr)
            return 2
    if not args.state_dir:
        args.state_dir = os.path.join(args.spool, "..", "state") if args.spool else "var/mcpgov/state"
    try:
        bundles = make_manager(args)
    except PolicySourceError as exc:
        print(f"mcpgov gateway: {exc}", file=sys.stderr)
        return 2
    configure_from_env()  # OpenTelemetry traces when OTEL_* asks for an exporter
    # one event loop for everything: the portal client's connections belong to it
    return anyio.run(_gateway_main, args, bundles)


def metrics_serve(gateway: Gateway, args: argparse.Namespace):
    """``--metrics HOST:PORT``: the Prometheus endpoint (:mod:`mcpgov.metrics`); returns its stop function."""
    if not getattr(args, "metrics", None):
        return lambda: None
    from mcpgov.metrics import GatewayMetrics, parse_address

    host, port = parse_address(args.metrics, public=args.metrics_public)
    gateway.observer.metrics = GatewayMetrics(gateway)
    return gateway.observer.metrics.serve(host, port)


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
            print(
                "mcpgov gateway: no verified bundle (portal unreachable and nothing cached): refusing to start",
                file=sys.stderr,
            )
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
        if args.http:
            host, _, port = args.http.rpartition(":")
            await serve_http(gateway, host or "127.0.0.1", int(port))
        else:
            await serve_stdio(gateway)
        stop_metrics()
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
