"""The environment gate: check an agent's MCP configuration against the bundle before any call.

Used at every gateway start and alone in CI (``mcpgov gate``); the configuration files are read by
:mod:`mcpgov.config`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass

from mcpgov.bundle import Bundle
from mcpgov.config import NAME_SEPARATOR, ConfigError, UpstreamConfig, load_mcp_config
from mcpgov.decision import compile_policy, forbidden_pattern_hit, iso_ts, production_words_in

log = logging.getLogger("mcpgov.gate")


@dataclass(frozen=True)
class Violation:
    server: str
    reason: str

    def __str__(self) -> str:
        return f"{self.server}: {self.reason}"


def environment_gate(
    bundle: Bundle,
    role: str,
    upstreams: dict[str, UpstreamConfig],
    *,
    now: float | None = None,
    extra_forbidden_patterns: tuple[str, ...] = (),
) -> list[Violation]:
    """Every reason a configured server may not be used in this environment by this role."""
    now = time.time() if now is None else now
    policy = compile_policy(bundle, role)
    env = bundle.environment_policy
    out: list[Violation] = []
    if now >= policy.expires_at:
        out.append(Violation("(bundle)", f"bundle v{bundle.version} expired at {iso_ts(policy.expires_at)}"))
    if role not in bundle.roles:
        out.append(Violation("(role)", f"role '{role}' is not defined in bundle v{bundle.version}"))
    for slug, up in sorted(upstreams.items()):
        if NAME_SEPARATOR in slug:
            out.append(
                Violation(
                    slug, f"server names may not contain '{NAME_SEPARATOR}' (tool names are <server>__<tool>)"
                )
            )
        rule = policy.rule(slug)
        if rule.role_violation and role in bundle.roles:
            out.append(Violation(slug, rule.role_violation))
        if rule.env_violation:
            out.append(Violation(slug, rule.env_violation))
        hit = forbidden_pattern_hit(up.targets(), env.forbidden_patterns + extra_forbidden_patterns)
        if hit:
            out.append(Violation(slug, f"configured target '{hit[1]}' matches forbidden pattern '{hit[0]}'"))
        words = sorted({w for t in up.targets() for w in production_words_in(t, bundle.production_url_words)})
        production = rule.production or bool(words)
        if production and not any(s <= now < e for s, e in rule.grant_windows):
            why = (
                rule.production_reason
                or f"configured target looks like production (words: {', '.join(words)})"
            )
            out.append(Violation(slug, f"{why}; no live production-access grant for role '{role}'"))
        if (
            rule.binding_target
            and up.url
            and "://" in rule.binding_target
            and up.url.rstrip("/") != rule.binding_target.rstrip("/")
        ):
            out.append(
                Violation(
                    slug,
                    f"configured url {up.url} differs from the environment binding {rule.binding_target}",
                )
            )
        if up.permissions == "read_write" and rule.binding_target is not None and rule.binding_read_only:
            out.append(Violation(slug, f"configured read_write but the binding in '{env.name}' is read_only"))
        if (
            rule.flag_off_read is not None
            and rule.flag_off_write is not None
            and rule.flag_off_read is rule.flag_off_write
        ):
            out.append(
                Violation(
                    slug,
                    f"disabled by governance flag {rule.flag_off_read.name}: {rule.flag_off_read.reason}",
                )
            )
    return out


def gate_report(
    bundle: Bundle,
    role: str,
    upstreams: dict[str, UpstreamConfig],
    violations: list[Violation],
    now: float | None = None,
) -> str:
    now = time.time() if now is None else now
    if not violations:
        return (
            f"MCP environment gate passed: environment={bundle.environment}, role={role}, "
            f"servers=[{', '.join(sorted(upstreams))}], bundle=v{bundle.version}, timestamp={iso_ts(now)}"
        )
    lines = [
        f"MCP environment gate FAILED: environment={bundle.environment}, role={role}, team={bundle.team}, "
        f"bundle=v{bundle.version}, timestamp={iso_ts(now)}"
    ]
    bad = {v.server for v in violations}
    for v in violations:
        lines.append(f"  ✗ {v}")
    for slug in sorted(set(upstreams) - bad):
        lines.append(f"  ✓ {slug}")
    lines.append(f"{len(violations)} violation(s): no MCP session may start with this configuration.")
    return "\n".join(lines)


def run_gate_cli(args: argparse.Namespace) -> int:
    from mcpgov.config import check_known_servers
    from mcpgov.policy_source import PolicySourceError, load_policy_once, read_token

    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.env or not args.role or not args.config:
        print("gate needs --env, --role and --config", file=sys.stderr)
        return 2
    try:
        read_token(args)
        upstreams, extra = load_mcp_config(args.config, environment=args.env)
        verified = load_policy_once(args)
        check_known_servers(upstreams, verified.bundle.servers, source=args.config, version=verified.version)
    except (ConfigError, PolicySourceError) as exc:
        print(f"MCP environment gate FAILED: {exc}", file=sys.stderr)
        return 2
    violations = environment_gate(verified.bundle, args.role, upstreams, extra_forbidden_patterns=extra)
    print(gate_report(verified.bundle, args.role, upstreams, violations), file=sys.stderr)
    return 1 if violations else 0
