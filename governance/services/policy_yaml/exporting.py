"""Writing a team's policy as YAML in the seed's shape and style (policy_import reads it back unchanged).

The output is canonical: roles, allowlists and per-server limits sorted by name, environments and
their bindings in their position order (then by name), so the same policy always exports to the same
bytes and a policy repository diffs cleanly in git."""

from __future__ import annotations

import json
import re

import yaml
from django.db.models import Prefetch

from governance.models import (
    AgentRole,
    Environment,
    GlobalRateLimit,
    RoleServerRule,
    ServerBinding,
    ServerRateLimit,
)
from governance.services.policy_yaml.document import (
    ACCESS_AUTHORIZATION,
    DEFAULT_DENY,
    GLOBAL_LIMIT_KEYS,
    KIND_KEYS,
    SERVER_LIMIT_KEYS,
)
from portal.models import Team

_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./:@+-]*")


def _scalar(value: str, *, flow: bool = False) -> str:
    """`value` plain where YAML reads it back as the same text, else double-quoted."""
    if _PLAIN.fullmatch(value):
        probe = f"[{value}]" if flow else f"k: {value}"
        if yaml.safe_load(probe) == ([value] if flow else {"k": value}):
            return value
    return _quoted(value)


def _quoted(value: str) -> str:
    for candidate in (json.dumps(value, ensure_ascii=False), json.dumps(value)):
        if yaml.safe_load(f"k: {candidate}") == {"k": value}:
            return candidate
    return yaml.safe_dump(value, default_style='"', width=float("inf"), allow_unicode=True).strip()


def _flow(values: list[str]) -> str:
    return f"[{', '.join(_scalar(v, flow=True) for v in values)}]"


def _export_access(team: Team) -> list[str]:
    rules = Prefetch(
        "rules", queryset=RoleServerRule.objects.select_related("server").order_by("server__slug")
    )
    roles = list(AgentRole.objects.filter(team=team).order_by("name").prefetch_related(rules))
    lines = ["mcp_access:", f"  default: {DEFAULT_DENY}", ""]
    if not roles:
        return [*lines, "  roles: {}"]
    lines.append("  roles:")
    for index, role in enumerate(roles):
        if index:
            lines.append("")
        lines.append(f"    {_scalar(role.name)}:")
        for kind, key in KIND_KEYS.items():
            lines.append(f"      {key}: {_flow([r.server.slug for r in role.rules.all() if r.kind == kind])}")
    return lines


def _export_environments(team: Team) -> list[str]:
    bindings = Prefetch(
        "bindings", queryset=ServerBinding.objects.select_related("server").order_by("order", "server__slug")
    )
    envs = list(Environment.objects.filter(team=team).order_by("order", "name").prefetch_related(bindings))
    if not envs:
        return ["environments: {}"]
    lines = ["environments:"]
    for index, env in enumerate(envs):
        if index:
            lines.append("")
        lines.append(f"  {_scalar(env.name)}:")
        if env.requires_authorization:
            lines.append(f"    access: {ACCESS_AUTHORIZATION}")
        env_bindings = list(env.bindings.all())
        lines.append("    allowed_servers:" if env_bindings else "    allowed_servers: []")
        for binding in env_bindings:
            lines.append(f"      - name: {_scalar(binding.server.slug)}")
            if binding.target:
                lines.append(f"        {binding.target_kind}: {_scalar(binding.target)}")
            lines.append(f"        permissions: {binding.permission}")
        if env.forbidden_patterns:
            lines.append("    forbidden_patterns:")
            lines += [f"      - {_quoted(pattern)}" for pattern in env.forbidden_patterns]
        if env.note:
            lines.append(f"    note: {_quoted(env.note)}")
    return lines


def _export_rate_limits(team: Team) -> list[str]:
    limits = GlobalRateLimit.objects.filter(team=team).first()
    global_values = {k: getattr(limits, k) for k in GLOBAL_LIMIT_KEYS} if limits else {}
    per_server = list(
        ServerRateLimit.objects.filter(team=team).select_related("server").order_by("server__slug")
    )
    lines = ["rate_limits:"]
    if any(v is not None for v in global_values.values()):
        lines.append("  global:")
        lines += [f"    {k}: {v}" for k, v in global_values.items() if v is not None]
    if per_server:
        if len(lines) > 1:
            lines.append("")
        lines.append("  per_server:")
        for limit in per_server:
            lines.append(f"    {_scalar(limit.server.slug)}:")
            lines += [
                f"      {k}: {getattr(limit, k)}" for k in SERVER_LIMIT_KEYS if getattr(limit, k) is not None
            ]
    return lines if len(lines) > 1 else ["rate_limits: {}"]


def policy_export(*, team: Team) -> str:
    """The team's policy as YAML in the seed's shape and style; policy_import reads it back unchanged."""
    header = [
        f"# MCP governance policy of team {team.slug}: mcp_access, environments and rate_limits.",
        "# Importing this file replaces the team's policy for each block it holds (docs/policy-yaml.md).",
    ]
    blocks = [_export_access(team), _export_environments(team), _export_rate_limits(team)]
    return "\n\n".join("\n".join(lines) for lines in [header, *blocks]) + "\n"
