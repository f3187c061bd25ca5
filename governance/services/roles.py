"""Agent roles and their allowlists."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from governance.choices import RuleKind
from governance.models import AgentRole, McpServer, RoleServerRule
from governance.services.common import apply_fields, check_policy_perm, policy_changed, save_validated
from governance.services.drafts import draftable
from portal.choices import ChangeEventType
from portal.models import Team
from portal.services import change_record


@draftable
@transaction.atomic
def role_create(*, team: Team, name: str, description: str = "", actor=None) -> AgentRole:
    check_policy_perm(actor, team)
    role = AgentRole(team=team, name=name, description=description)
    save_validated(role)
    change_record(
        team=team,
        actor=actor,
        event_type=ChangeEventType.ROLE_CREATED,
        obj=role,
        summary=f"Role {name} added",
    )
    policy_changed(team=team, reason=f"role {name} added")
    return role


@draftable
@transaction.atomic
def role_update(*, role: AgentRole, actor=None, **data: Any) -> AgentRole:
    check_policy_perm(actor, role.team)
    changes = apply_fields(role, {k: v for k, v in data.items() if k in ("name", "description")})
    if changes:
        save_validated(role)
        change_record(
            team=role.team, actor=actor, event_type=ChangeEventType.ROLE_UPDATED, obj=role, changes=changes
        )
        policy_changed(team=role.team, reason=f"role {role.name} changed")
    return role


@draftable
@transaction.atomic
def role_delete(*, role: AgentRole, actor=None) -> None:
    check_policy_perm(actor, role.team)
    team = role.team
    change_record(
        team=team,
        actor=actor,
        event_type=ChangeEventType.ROLE_DELETED,
        obj=role,
        summary=f"Role {role.name} removed",
    )
    role.delete()
    policy_changed(team=team, reason=f"role {role.name} removed")


@draftable
@transaction.atomic
def role_server_add(*, role: AgentRole, server: McpServer, kind: str, actor=None) -> RoleServerRule:
    """Put `server` on the role's allowed or forbidden list. A server is never on both."""
    check_policy_perm(actor, role.team)
    if kind not in RuleKind.values:
        raise ValidationError({"kind": f"Kind must be one of {', '.join(RuleKind.values)}."})
    if server.team_id != role.team_id:
        raise ValidationError({"server": "The server belongs to another team."})
    existing = RoleServerRule.objects.filter(role=role, server=server).first()
    if existing is not None:
        if existing.kind == kind:
            return existing
        other = "forbidden" if kind == RuleKind.ALLOWED else "allowed"
        raise ValidationError(
            {
                "server": f"{server.slug} is already {other} for {role.name}; a server cannot be both allowed and "
                f"forbidden. Remove it from the {other} list first."
            }
        )
    rule = RoleServerRule(role=role, server=server, kind=kind)
    save_validated(rule)
    change_record(
        team=role.team,
        actor=actor,
        event_type=ChangeEventType.ROLE_SERVER_ADDED,
        obj=role,
        summary=f"{server.slug} added to {kind} servers of {role.name}",
        changes={f"{kind}_servers": [None, server.slug]},
    )
    policy_changed(team=role.team, reason=f"{server.slug} {kind} for {role.name}")
    return rule


@draftable
@transaction.atomic
def role_server_remove(*, rule: RoleServerRule, actor=None) -> None:
    role, server, kind = rule.role, rule.server, rule.kind
    check_policy_perm(actor, role.team)
    rule.delete()
    change_record(
        team=role.team,
        actor=actor,
        event_type=ChangeEventType.ROLE_SERVER_REMOVED,
        obj=role,
        summary=f"{server.slug} removed from {kind} servers of {role.name}",
        changes={f"{kind}_servers": [server.slug, None]},
    )
    policy_changed(team=role.team, reason=f"{server.slug} no longer {kind} for {role.name}")
