"""The ``mcpgov`` command line: ``gateway``, ``gate``, ``discover``, ``verify-bundle``, ``audit-check``.

Every message goes to stderr: on stdio, the gateway's stdout is the JSON-RPC wire.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def cmd_verify_bundle(args: argparse.Namespace) -> int:
    from mcpgov.verify import (
        BundleState,
        BundleVerificationError,
        KeyFileError,
        StateFileError,
        load_jwks,
        verify_bundle,
    )

    try:
        keys = load_jwks(args.keys)
        state = BundleState(args.state_file) if args.state_file else None
        with open(args.file, encoding="ascii", errors="replace") as fh:
            jws = fh.read()
        verified = verify_bundle(jws, keys, team=args.team, environment=args.env, state=state)
    except BundleVerificationError as exc:
        _err(f"bundle rejected: {exc.code}: {exc.message}")
        return 1
    except (KeyFileError, StateFileError, OSError) as exc:
        _err(f"cannot verify: {exc}")
        return 2
    b = verified.bundle
    if state is not None and args.accept:
        state.accept(b, verified.payload_sha256)
    _err(
        f"bundle ok: team={b.team} environment={b.environment} version={b.version} kid={verified.kid} "
        f"expires_at={b.expires_at.isoformat()}"
    )
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    from mcpgov.serve import run_gateway_cli

    return run_gateway_cli(args)


def cmd_gate(args: argparse.Namespace) -> int:
    from mcpgov.gate import run_gate_cli

    return run_gate_cli(args)


def cmd_discover(args: argparse.Namespace) -> int:
    from mcpgov.discover import run_discover_cli

    return run_discover_cli(args)


def cmd_audit_check(args: argparse.Namespace) -> int:
    from mcpgov.policy_source import PolicySourceError, read_token
    from mcpgov.portal_client import run_audit_check_cli

    try:
        read_token(args)
    except PolicySourceError as exc:
        _err(f"audit-check: {exc}")
        return 2

    return run_audit_check_cli(args)


def _add_token(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--token",
        default=None,
        help="enforcement client token (env MCPGOV_TOKEN); visible in ps: prefer --token-file",
    )
    p.add_argument(
        "--token-file",
        default=_env("MCPGOV_TOKEN_FILE"),
        metavar="PATH",
        help="read the token from this file (env MCPGOV_TOKEN_FILE)",
    )


def _add_policy_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--portal", default=_env("MCPGOV_PORTAL"), help="portal base URL (env MCPGOV_PORTAL)")
    _add_token(p)
    p.add_argument("--keys", default=_env("MCPGOV_KEYS"), help="pinned JWKS file (env MCPGOV_KEYS)")
    p.add_argument(
        "--bundle-file", default=_env("MCPGOV_BUNDLE_FILE"), help="offline: a signed bundle (JWS) file"
    )
    p.add_argument("--team", default=_env("MCPGOV_TEAM"), help="expected team slug (env MCPGOV_TEAM)")
    p.add_argument(
        "--env", default=_env("MCPGOV_ENV", _env("MCP_ENV")), help="environment (env MCPGOV_ENV / MCP_ENV)"
    )
    p.add_argument("--role", default=_env("MCPGOV_ROLE"), help="agent role (env MCPGOV_ROLE)")
    p.add_argument("--config", default=_env("MCPGOV_CONFIG"), help=".mcp.json-style upstream config")
    p.add_argument("--state-dir", default=_env("MCPGOV_STATE_DIR"), help="bundle cache + anti-replay state")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcpgov", description="MCP governance enforcer")
    sub = parser.add_subparsers(dest="command", required=True)

    v = sub.add_parser("verify-bundle", help="verify a signed bundle file against pinned keys")
    v.add_argument("file")
    v.add_argument("--keys", required=True, help="pinned JWKS file")
    v.add_argument("--team")
    v.add_argument("--env")
    v.add_argument("--state-file", help="anti-replay state (last accepted version)")
    v.add_argument("--accept", action="store_true", help="record the bundle as accepted in --state-file")
    v.set_defaults(func=cmd_verify_bundle)

    g = sub.add_parser("gateway", help="run the enforcement gateway (MCP server on stdio or HTTP)")
    _add_policy_source(g)
    g.add_argument("--http", metavar="HOST:PORT", default=_env("MCPGOV_HTTP"), help="serve streamable HTTP")
    g.add_argument(
        "--resource",
        default=_env("MCPGOV_RESOURCE"),
        help="this gateway's OAuth resource URL, the agent tokens' audience (default http://HOST:PORT/mcp)",
    )
    g.add_argument(
        "--issuer",
        default=_env("MCPGOV_ISSUER"),
        help="authorization server of agent tokens (default --portal); with --bundle-file it turns HTTP auth on",
    )
    scope = g.add_mutually_exclusive_group()
    scope.add_argument("--read-only", dest="read_only", action="store_true", default=None)
    scope.add_argument("--read-write", dest="read_only", action="store_false")
    g.add_argument(
        "--declare-large-data", action="store_true", default=_env("MCPGOV_DECLARE_LARGE_DATA") == "1"
    )
    g.add_argument("--spool", default=_env("MCPGOV_SPOOL"), help="audit spool directory")
    g.add_argument("--agent", default=_env("MCPGOV_AGENT", ""), help="free-text agent description")
    g.add_argument("--audit-log", default=_env("MCPGOV_AUDIT_LOG"), help="human-readable MCP_AUDIT log file")
    g.add_argument(
        "--default-timeout", type=float, default=float(_env("MCPGOV_DEFAULT_TIMEOUT", "120") or 120)
    )
    g.add_argument(
        "--approval-timeout", type=float, default=float(_env("MCPGOV_APPROVAL_TIMEOUT", "300") or 300)
    )
    g.add_argument(
        "--upstream-mode",
        default=_env("MCPGOV_UPSTREAM_MODE", "legacy"),
        choices=["auto", "legacy", "2026-07-28"],
    )
    g.add_argument(
        "--durability",
        default=_env("MCPGOV_DURABILITY", "intent"),
        choices=["process", "intent", "all"],
        help="process: write(2) only; intent (default): fsync each INTENT before forwarding; all: fsync every event",
    )
    g.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        default=_env("MCPGOV_METRICS"),
        help="serve Prometheus metrics on /metrics (env MCPGOV_METRICS; off by default; loopback only "
        "unless --metrics-public)",
    )
    g.add_argument(
        "--metrics-public",
        action="store_true",
        default=_env("MCPGOV_METRICS_PUBLIC") == "1",
        help="allow --metrics on a non-loopback address (unauthenticated: firewall it)",
    )
    g.add_argument(
        "--idle-timeout",
        type=float,
        default=float(_env("MCPGOV_IDLE_TIMEOUT", "900") or 900),
        metavar="S",
        help="HTTP: end an agent session after S seconds without a request (900)",
    )
    g.set_defaults(func=cmd_gateway)

    gt = sub.add_parser("gate", help="environment gate for CI: check an MCP config against the bundle")
    _add_policy_source(gt)
    gt.set_defaults(func=cmd_gate)

    d = sub.add_parser(
        "discover", help="list the configured servers' tools here and report them to the portal for review"
    )
    d.add_argument("--portal", default=_env("MCPGOV_PORTAL"), help="portal base URL (env MCPGOV_PORTAL)")
    _add_token(d)
    d.add_argument("--config", default=_env("MCPGOV_CONFIG"), help=".mcp.json-style upstream config")
    d.add_argument(
        "--env", default=_env("MCPGOV_ENV", _env("MCP_ENV")), help="environment (seed yaml configs)"
    )
    d.add_argument("--server", action="append", help="only this server (repeatable; default: all configured)")
    d.add_argument("--timeout", type=float, default=20.0, help="seconds per server (20)")
    d.set_defaults(func=cmd_discover)

    a = sub.add_parser("audit-check", help="exit 0 only if the session's audit log was acknowledged")
    a.add_argument("--session", required=True)
    a.add_argument("--portal", default=_env("MCPGOV_PORTAL"))
    _add_token(a)
    a.set_defaults(func=cmd_audit_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "token"):
        args.token_given = args.token is not None
        if args.token is None:
            args.token = _env("MCPGOV_TOKEN")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
