"""The difference between two bundle contents of one environment, in the words admins use:
"code_agent gains github_api in staging", "write_file on git becomes approval-required"."""

from __future__ import annotations

from typing import Any

from governance.services.bundles import bundle_diff


def _effective(content: dict[str, Any]) -> dict[str, set[str]]:
    """{role: servers it may call here}: allowed, not forbidden, and bound in this environment."""
    bound = set((content.get("environment_policy") or {}).get("bindings") or {})
    return {
        role: (set(policy.get("allowed_servers") or []) - set(policy.get("forbidden_servers") or [])) & bound
        for role, policy in (content.get("roles") or {}).items()
    }


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return f"[{', '.join(_show(v) for v in value)}]"
    return str(value)


def _line(env: str, kind: str, path: str, old: Any, new: Any) -> str | None:
    parts = path.split(".")
    head = parts[0]
    if len(parts) == 1 and head not in ("flags", "grants", "agents"):  # a whole section (or a scalar)
        return (
            f"{head.replace('_', ' ')} {kind}"
            if kind != "changed"
            else f"{head}: {_show(old)} -> {_show(new)}"
        )
    if head == "roles":
        role = parts[1]
        if len(parts) == 2:
            return f"role {role} {'added' if kind == 'added' else 'removed'}"
        what = parts[2].split("[")[0]
        if "[" in parts[2]:
            server = parts[2].split("[", 1)[1].rstrip("]")
            listed = "allowed" if what == "allowed_servers" else "forbidden"
            verb = "added to" if kind == "added" else "removed from"
            return f"{server} {verb} the {listed} servers of {role}"
        return None
    if head == "servers":
        server = parts[1]
        if len(parts) == 2:
            return f"server {server} {'added to' if kind == 'added' else 'removed from'} the catalogue"
        if parts[2] == "tools" and len(parts) >= 4:
            tool = parts[3]
            if len(parts) == 4:
                return f"tool {tool} of {server} {'added' if kind == 'added' else 'removed'}"
            attr = parts[4]
            if attr == "class":
                return f"{tool} on {server} becomes {'read-only' if new == 'read' else 'a write tool'}"
            if attr == "approval_required":
                return f"{tool} on {server} " + (
                    "becomes approval-required" if new else "no longer needs approval"
                )
            if attr == "definition_hash":
                return f"{tool} on {server}: pinned definition changes"
        return f"{server}: {'.'.join(parts[2:])} {_show(old)} -> {_show(new)}"
    if head == "environment_policy":
        if len(parts) >= 3 and parts[1] == "bindings":
            server = parts[2]
            if len(parts) == 3:
                if kind == "added":
                    return f"{server} bound in {env} ({(new or {}).get('permission', '')})"
                return f"{server} unbound from {env}"
            if parts[3] == "permission":
                return f"{server} becomes {new} in {env}"
            return f"{server} {parts[3]} in {env}: {_show(old)} -> {_show(new)}"
        name = parts[1].split("[")[0]
        if name == "forbidden_patterns" and "[" in parts[1]:
            pattern = parts[1].split("[", 1)[1].rstrip("]")
            return f"forbidden pattern {pattern} {'added in' if kind == 'added' else 'removed from'} {env}"
        return f"{env} {name.replace('_', ' ')}: {_show(old)} -> {_show(new)}"
    if head == "rate_limits":
        if len(parts) >= 3 and parts[1] == "per_server":
            server = parts[2]
            if len(parts) == 3:
                if kind == "added":
                    values = ", ".join(f"{k} {v}" for k, v in sorted((new or {}).items()) if v is not None)
                    return f"rate limits of {server} added ({values})"
                return f"rate limits of {server} removed"
            return f"{server} {parts[3]}: {_show(old)} -> {_show(new)}"
        return f"global {'.'.join(parts[2:]) or parts[1]}: {_show(old)} -> {_show(new)}"
    if head == "triggers":
        return f"trigger setting {'.'.join(parts[1:])}: {_show(old)} -> {_show(new)}"
    if head in ("flags", "grants", "agents"):
        return None  # emergency controls: never part of a draft (they are published at once)
    return f"{path}: {_show(old)} -> {_show(new)}"


_NESTED_SECTIONS = ("environment_policy", "rate_limits")  # sections whose members are sections too


def _fill_sections(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key, value in b.items():
        if key not in a and isinstance(value, dict | list):
            a[key] = type(value)()


def describe_bundle_changes(env: str, live: dict[str, Any], draft: dict[str, Any]) -> list[str]:
    """One line per change a person would notice, access first; [] when the policy is the same."""
    lines: list[str] = []
    before, after = _effective(live), _effective(draft)
    for role in sorted(set(before) | set(after)):
        for server in sorted(after.get(role, set()) - before.get(role, set())):
            lines.append(f"{role} gains {server} in {env}")
        for server in sorted(before.get(role, set()) - after.get(role, set())):
            lines.append(f"{role} loses {server} in {env}")
    old = {k: v for k, v in live.items() if k not in ("flags", "grants", "agents")}
    new = {k: v for k, v in draft.items() if k not in ("flags", "grants", "agents")}
    # A section one side lacks (nothing published yet) is compared as empty, so its entries are named.
    for a, b in ((old, new), (new, old)):
        _fill_sections(a, b)
        for key in _NESTED_SECTIONS:
            if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
                a[key] = dict(a[key])
                _fill_sections(a[key], b[key])
    for entry in bundle_diff(old, new):
        line = _line(env, entry.kind, entry.path, entry.old, entry.new)
        if line and line not in lines:
            lines.append(line)
    return lines
