"""Writes for teams and memberships, and the change-history helper every service uses."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import models, transaction
from guardian.shortcuts import assign_perm, remove_perm

from portal import permissions
from portal.choices import MembershipSource, TeamRole
from portal.models import ChangeRecord, Membership, Team


def _jsonable(value: Any) -> Any:
    if isinstance(value, models.Model):
        return str(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def change_record(
    *,
    team: Team,
    actor=None,
    action: str,
    obj: Any = None,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
    summary: str = "",
    changes: dict[str, Any] | None = None,
    actor_label: str = "",
) -> ChangeRecord:
    """Record one write in the team's change history. Call inside the write's transaction."""
    if obj is not None:
        object_type = object_type or obj._meta.verbose_name
        object_id = object_id or str(obj.pk or "")
        object_repr = object_repr or str(obj)
    return ChangeRecord.objects.create(
        team=team,
        actor=actor if actor is not None and getattr(actor, "is_authenticated", False) else None,
        actor_label=actor_label,
        action=action,
        object_type=object_type[:100],
        object_id=object_id[:64],
        object_repr=object_repr[:300],
        summary=summary[:500],
        changes=_jsonable(changes or {}),
    )


def diff_fields(instance: models.Model, data: dict[str, Any]) -> dict[str, list[Any]]:
    """{field: [old, new]} for the fields in `data` whose value differs on `instance`."""
    changed = {}
    for field, new in data.items():
        old = getattr(instance, field)
        if old != new:
            changed[field] = [_jsonable(old), _jsonable(new)]
    return changed


@transaction.atomic
def team_create(*, slug: str, name: str, actor=None, **settings: Any) -> Team:
    team = Team(slug=slug, name=name, **settings)
    team.full_clean()
    team.save()
    change_record(team=team, actor=actor, action=ChangeRecord.Action.CREATE, obj=team, summary="Team created")
    return team


def _sync_guardian(membership: Membership) -> None:
    wanted = permissions.permissions_for(membership.role, is_auditor=membership.is_auditor)
    for perm in permissions.ALL_TEAM_PERMISSIONS:
        if perm in wanted:
            assign_perm(f"portal.{perm}", membership.user, membership.team)
        else:
            remove_perm(f"portal.{perm}", membership.user, membership.team)


def is_last_admin(membership: Membership) -> bool:
    """True if `membership` is its team's only admin (a team always keeps one)."""
    return (
        membership.pk is not None
        and membership.role == TeamRole.ADMIN
        and not Membership.objects.filter(team_id=membership.team_id, role=TeamRole.ADMIN)
        .exclude(pk=membership.pk)
        .exists()
    )


@transaction.atomic
def membership_set(
    *,
    team: Team,
    user,
    role: str,
    is_auditor: bool = False,
    actor=None,
    source: str | None = None,
    actor_label: str = "",
) -> Membership:
    """Add `user` to `team` with `role`, or change their role; guardian grants follow.

    `source` (MembershipSource) says who manages the membership from now on; None keeps
    the current one (local for a new membership). Single sign-on passes "sso".
    """
    if role not in permissions.ROLE_PERMISSIONS:
        raise ValueError(f"Unknown team role {role!r}.")
    membership, created = Membership.objects.select_for_update().get_or_create(
        team=team,
        user=user,
        defaults={"role": role, "is_auditor": is_auditor, "source": source or MembershipSource.LOCAL},
    )
    if not created and role != TeamRole.ADMIN and is_last_admin(membership):
        raise ValidationError("The team's last admin cannot be demoted; make someone else admin first.")
    wanted = {"role": role, "is_auditor": is_auditor, "source": source or membership.source}
    changes = {} if created else diff_fields(membership, wanted)
    membership.role, membership.is_auditor, membership.source = role, is_auditor, wanted["source"]
    membership.save()
    _sync_guardian(membership)
    if created or changes:
        change_record(
            team=team,
            actor=actor,
            actor_label=actor_label,
            action=ChangeRecord.Action.CREATE if created else ChangeRecord.Action.UPDATE,
            obj=membership,
            summary=f"{user.get_username()} is {role}" + (" (auditor)" if is_auditor else ""),
            changes=changes,
        )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor=None, actor_label: str = "") -> None:
    team, user = membership.team, membership.user
    if is_last_admin(Membership.objects.select_for_update().get(pk=membership.pk)):
        raise ValidationError(f"{user.get_username()} is the team's last admin and cannot be removed.")
    for perm in permissions.ALL_TEAM_PERMISSIONS:
        remove_perm(f"portal.{perm}", user, team)
    change_record(
        team=team,
        actor=actor,
        actor_label=actor_label,
        action=ChangeRecord.Action.DELETE,
        obj=membership,
        summary=f"{user.get_username()} removed from the team",
    )
    membership.delete()


def user_create(*, username: str, password: str, email: str = "", **extra: Any):
    user_model = get_user_model()
    user = user_model(username=username, email=email, **extra)
    user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    return user
