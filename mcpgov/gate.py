"""The environment gate: check an agent's MCP configuration against the bundle before any call.

Used at every gateway session start and alone in CI (``mcpgov gate``). Reads ``.mcp.json``-style
``{"mcpServers": {...}}`` files and the seed's ``mcp-config.yaml`` (``environments: {env: {allowed_servers,
forbidden_patterns}}``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mcpgov.bundle import Bundle
from mcpgov.decision import compile_policy, forbidden_pattern_hit, iso_ts, production_words_in

log = logging.getLogger("mcpgov.gate")

NAME_SEPARATOR = "__"


@dataclass(frozen=True)
class UpstreamConfig:
    """One configured MCP server: its slug (the config's name) and how to reach it."""

    slug: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    path: str | None = None  # seed yaml: the path a filesystem server is scoped to
    permissions: str | None = None  # seed yaml: read_only | read_write
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def transport(self) -> str:
        return "http" if self.url else "stdio"

    def targets(self) -> list[str]:
        """Where this server points: url, path and arguments (checked against patterns and production words).

        The command itself is not a target: an interpreter's install path says nothing about the data.
        """
        return [t for t in (self.url, self.path, *self.args) if t]


class ConfigError(Exception):
    """The MCP configuration file cannot be read."""


def parse_mcp_config(
    doc: Any, *, environment: str | None = None
) -> tuple[dict[str, UpstreamConfig], tuple[str, ...]]:
    """``(servers, extra forbidden patterns)`` from a parsed ``.mcp.json`` or seed ``mcp-config.yaml``."""
    if not isinstance(doc, dict):
        raise ConfigError("the MCP configuration must be a mapping")
    servers: dict[str, UpstreamConfig] = {}
    if "mcpServers" in doc:
        entries = doc["mcpServers"] or {}
        if not isinstance(entries, dict):
            raise ConfigError("mcpServers must be a mapping of name to server")
        for name, entry in entries.items():
            if not isinstance(entry, dict):
                raise ConfigError(f"mcpServers.{name} must be a mapping")
            url = entry.get("url") or entry.get("serverUrl")
            command = entry.get("command")
            if not url and not command:
                raise ConfigError(f"mcpServers.{name} needs a command or a url")
            servers[str(name)] = UpstreamConfig(
                slug=str(name), command=command, args=tuple(str(a) for a in entry.get("args") or ()),
                env={str(k): str(v) for k, v in (entry.get("env") or {}).items()}, url=url,
                headers={str(k): str(v) for k, v in (entry.get("headers") or {}).items()},
            )  # fmt: skip
        return servers, ()
    if "environments" in doc:
        envs = doc["environments"] or {}
        if environment is None or environment not in envs:
            raise ConfigError(
                f"the configuration has no environment {environment!r} (has: {', '.join(envs)})"
            )
        env = envs[environment] or {}
        for item in env.get("allowed_servers") or ():
            if not isinstance(item, dict) or "name" not in item:
                raise ConfigError("each allowed_servers entry needs a name")
            name = str(item["name"])
            servers[name] = UpstreamConfig(
                slug=name, url=item.get("url"), path=item.get("path"), permissions=item.get("permissions"),
                command=item.get("command"), args=tuple(str(a) for a in item.get("args") or ()),
            )  # fmt: skip
        return servers, tuple(str(p) for p in env.get("forbidden_patterns") or ())
    raise ConfigError('the configuration has neither "mcpServers" nor "environments"')


def load_mcp_config(
    path: str | os.PathLike[str], *, environment: str | None = None
) -> tuple[dict[str, UpstreamConfig], tuple[str, ...]]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc}") from exc
    try:
        doc = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {exc}") from exc
    return parse_mcp_config(doc, environment=environment)


@dataclass(frozen=True)
class Violation:
    server: str
    reason: str

    def __str__(self) -> str:
        return f"{self.server}: {self.reason}"


def environment_gate(bundle: Bundle, role: str, upstreams: dict[str, UpstreamConfig], *, now: float | None = None,
                     extra_forbidden_patterns: tuple[str, ...] = ()) -> list[Violation]:  # fmt: skip
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


def gate_report(bundle: Bundle, role: str, upstreams: dict[str, UpstreamConfig], violations: list[Violation],
                now: float | None = None) -> str:  # fmt: skip
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
    from mcpgov.policy_source import PolicySourceError, load_policy_once

    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.env or not args.role or not args.config:
        print("gate needs --env, --role and --config", file=sys.stderr)
        return 2
    try:
        upstreams, extra = load_mcp_config(args.config, environment=args.env)
        verified = load_policy_once(args)
    except (ConfigError, PolicySourceError) as exc:
        print(f"MCP environment gate FAILED: {exc}", file=sys.stderr)
        return 2
    violations = environment_gate(verified.bundle, args.role, upstreams, extra_forbidden_patterns=extra)
    print(gate_report(verified.bundle, args.role, upstreams, violations), file=sys.stderr)
    return 1 if violations else 0
