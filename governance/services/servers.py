"""Catalogue writes: servers, tools and their read/write class."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from governance.models import McpServer, McpTool
from governance.services.common import apply_fields, check_policy_perm, policy_changed, save_validated
from governance.services.drafts import draftable
from portal.choices import ChangeEventType
from portal.models import Team
from portal.services import change_record


@draftable
@transaction.atomic
def server_create(*, team: Team, actor=None, **data: Any) -> McpServer:
    check_policy_perm(actor, team)
    server = McpServer(team=team)
    apply_fields(server, {k: v for k, v in data.items() if k in McpServer.FIELDS})
    save_validated(server)
    change_record(
        team=team,
        actor=actor,
        event_type=ChangeEventType.SERVER_CREATED,
        obj=server,
        summary=f"Server {server.slug} added",
    )
    policy_changed(team=team, reason=f"server {server.slug} added")
    return server


@draftable
@transaction.atomic
def server_update(*, server: McpServer, actor=None, **data: Any) -> McpServer:
    check_policy_perm(actor, server.team)
    changes = apply_fields(server, {k: v for k, v in data.items() if k in McpServer.FIELDS})
    if changes:
        save_validated(server)
        change_record(
            team=server.team,
            actor=actor,
            event_type=ChangeEventType.SERVER_UPDATED,
            obj=server,
            changes=changes,
        )
        policy_changed(team=server.team, reason=f"server {server.slug} changed")
    return server


@draftable
@transaction.atomic
def server_delete(*, server: McpServer, actor=None) -> None:
    check_policy_perm(actor, server.team)
    team = server.team
    change_record(
        team=team,
        actor=actor,
        event_type=ChangeEventType.SERVER_DELETED,
        obj=server,
        summary=f"Server {server.slug} removed",
    )
    server.delete()
    policy_changed(team=team, reason=f"server {server.slug} removed")


def _hint(annotations: dict[str, Any], camel: str, snake: str) -> bool | None:
    value = annotations.get(camel, annotations.get(snake))
    return value if isinstance(value, bool) else None


def tool_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """The McpTool fields a discovered tool spec sets (the admin's override and approval flag are not among them)."""
    annotations = spec.get("annotations") or {}
    return {
        "title": spec.get("title") or annotations.get("title") or "",
        "description": spec.get("description") or "",
        "input_schema": spec.get("input_schema") or {},
        "annotations": annotations,
        "read_only_hint": _hint(annotations, "readOnlyHint", "read_only_hint"),
        "destructive_hint": _hint(annotations, "destructiveHint", "destructive_hint"),
    }


def tool_changes(*, server: McpServer, tools: list[dict[str, Any]]) -> dict[str, list[str]]:
    """What recording `tools` would change: {"added", "updated", "removed"} names (no write)."""
    existing = {t.name: t for t in server.tools.all()}
    report: dict[str, list[str]] = {"added": [], "updated": [], "removed": []}
    for spec in tools:
        tool = existing.get(spec["name"])
        if tool is None:
            report["added"].append(spec["name"])
        elif any(getattr(tool, k) != v for k, v in tool_fields(spec).items()):
            report["updated"].append(spec["name"])
    names = {spec["name"] for spec in tools}
    report["removed"] = [name for name in existing if name not in names]
    return report


@transaction.atomic
def server_tools_record(
    *, server: McpServer, tools: list[dict[str, Any]], actor=None
) -> dict[str, list[str]]:
    """Record discovered tools (name, title, description, input_schema, annotations).

    New tools are added, changed definitions updated (the admin's class override and
    approval flag are kept), tools the server no longer offers removed.
    Returns {"added": [...], "updated": [...], "removed": [...]}.
    """
    check_policy_perm(actor, server.team)
    now = timezone.now()
    existing = {t.name: t for t in server.tools.all()}
    seen: set[str] = set()
    report: dict[str, list[str]] = {"added": [], "updated": [], "removed": []}
    for spec in tools:
        name = spec["name"]
        seen.add(name)
        fields = tool_fields(spec)
        tool = existing.get(name)
        if tool is None:
            tool = McpTool(server=server, name=name, discovered_at=now, **fields)
            save_validated(tool)
            report["added"].append(name)
        elif apply_fields(tool, fields):
            tool.discovered_at = now
            save_validated(tool)
            report["updated"].append(name)
    for name, tool in existing.items():
        if name not in seen:
            tool.delete()
            report["removed"].append(name)
    server.tools_discovered_at = now
    server.save(update_fields=["tools_discovered_at", "updated_at"])
    summary = ", ".join(f"{k}: {', '.join(v)}" for k, v in report.items() if v) or "no change"
    change_record(
        team=server.team,
        actor=actor,
        event_type=ChangeEventType.TOOLS_DISCOVERED,
        obj=server,
        summary=f"Tools discovered ({summary})",
        changes={k: v for k, v in report.items() if v},
    )
    if any(report.values()):
        policy_changed(team=server.team, reason=f"tools of {server.slug} discovered")
    return report


@draftable
@transaction.atomic
def tool_update(
    *,
    tool: McpTool,
    actor=None,
    access_class_override: str | None = None,
    approval_required: bool | None = None,
) -> McpTool:
    """An admin overrides a tool's read/write class (annotations are only hints) or requires approval."""
    team = tool.server.team
    check_policy_perm(actor, team)
    data: dict[str, Any] = {}
    if access_class_override is not None:
        data["access_class_override"] = access_class_override
    if approval_required is not None:
        data["approval_required"] = approval_required
    changes = apply_fields(tool, data)
    if changes:
        save_validated(tool)
        change_record(
            team=team, actor=actor, event_type=ChangeEventType.TOOL_UPDATED, obj=tool, changes=changes
        )
        policy_changed(team=team, reason=f"tool {tool} changed")
    return tool
