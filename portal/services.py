"""Writes for teams and memberships, and the change-history helper every service uses."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import models, transaction
from django.urls import reverse
from django.utils import timezone
from guardian.utils import evict_obj_perms_cache, get_user_obj_perms_model

from portal import permissions
from portal.choices import ChangeEventType, MembershipSource, TeamRole
from portal.models import ChangeRecord, Invitation, Membership, Team
from portal.tokens import token_sha256


def real_user(actor):
    """`actor` if it is a person's account (authenticated, saved), else None: what a `created_by`
    or `actor` foreign key stores for writes by tasks, anonymous users or enforcement clients."""
    return actor if actor is not None and getattr(actor, "is_authenticated", False) and actor.pk else None


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
    event_type: ChangeEventType,
    obj: Any = None,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
    summary: str = "",
    changes: dict[str, Any] | None = None,
    actor_label: str = "",
) -> ChangeRecord:
    """Record one write in the team's change history. Call inside the write's transaction.

    `event_type` says what happened (portal.choices.ChangeEventType); the coarse `action` follows from it."""
    event_type = ChangeEventType(event_type)
    if obj is not None:
        object_type = object_type or obj._meta.verbose_name
        object_id = object_id or str(obj.pk or "")
        object_repr = object_repr or str(obj)
    return ChangeRecord.objects.create(
        team=team,
        actor=real_user(actor),
        actor_label=actor_label,
        action=event_type.action,
        event_type=event_type,
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
def team_create(*, slug: str, name: str, actor=None, **team_settings: Any) -> Team:
    team = Team(slug=slug, name=name, **team_settings)
    team.full_clean()
    team.save()
    change_record(
        team=team, actor=actor, event_type=ChangeEventType.TEAM_CREATED, obj=team, summary="Team created"
    )
    return team


def _sync_guardian(membership: Membership) -> None:
    wanted = permissions.permissions_for(membership.role, is_auditor=membership.is_auditor)
    _set_team_perms(membership.user, membership.team, wanted)


def _set_team_perms(user, team: Team, wanted: frozenset[str]) -> None:
    """The user's django-guardian grants on `team` become exactly `wanted` (of ALL_TEAM_PERMISSIONS).

    Through guardian's own object-permission model, as `assign_perm` / `remove_perm` write it, but in
    one read, one delete and one insert: those shortcuts look up and write one permission at a time
    (~45 queries, ~40 ms, per membership change).
    """
    model = get_user_obj_perms_model(team)
    content_type = ContentType.objects.get_for_model(team)
    rows = model.objects.filter(
        user=user,
        content_type=content_type,
        object_pk=str(team.pk),
        permission__codename__in=permissions.ALL_TEAM_PERMISSIONS,
    )
    held = dict(rows.values_list("permission__codename", "pk"))
    extra = [pk for codename, pk in held.items() if codename not in wanted]
    if extra:
        model.objects.filter(pk__in=extra).delete()
    missing = wanted - held.keys()
    if missing:
        grants = list(Permission.objects.filter(content_type=content_type, codename__in=missing))
        if len(grants) != len(missing):  # as assign_perm refuses an unknown permission
            raise Permission.DoesNotExist(
                f"team permissions missing: {sorted(missing - {p.codename for p in grants})}"
            )
        model.objects.bulk_create(
            [
                model(user=user, permission=perm, content_type=content_type, object_pk=str(team.pk))
                for perm in grants
            ]
        )
    evict_obj_perms_cache(user)  # GUARDIAN_AUTO_PREFETCH: this object's cached grants are stale now


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
    grants_payloads = is_auditor and (created or not membership.is_auditor)
    if grants_payloads and actor is not None and getattr(actor, "pk", None) == user.pk:
        raise ValidationError(
            {"is_auditor": "Nobody can grant themself payload access: another admin or a site admin must."}
        )
    wanted = {"role": role, "is_auditor": is_auditor, "source": source or membership.source}
    changes = {} if created else diff_fields(membership, wanted)
    membership.role, membership.is_auditor, membership.source = role, is_auditor, wanted["source"]
    membership.save()
    membership.user = user  # the caller's object (same row): its cached grants are the ones evicted
    _sync_guardian(membership)
    if created or changes:
        change_record(
            team=team,
            actor=actor,
            actor_label=actor_label,
            event_type=ChangeEventType.MEMBER_ADDED if created else ChangeEventType.MEMBER_ROLE_CHANGED,
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
    _set_team_perms(user, team, frozenset())
    change_record(
        team=team,
        actor=actor,
        actor_label=actor_label,
        event_type=ChangeEventType.MEMBER_REMOVED,
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


# --- invitations ---------------------------------------------------------------------------------


@transaction.atomic
def invitation_create(
    *, team: Team, email: str, role: str, is_auditor: bool = False, actor=None
) -> tuple[Invitation, str]:
    """Invite `email` to `team` as `role`. Returns the invitation and its token (shown once, kept hashed).

    The answer is the same whether or not a portal account has that email: nothing here tells the
    inviter who exists. The membership is created only when the invited person accepts.
    """
    if role not in permissions.ROLE_PERMISSIONS:
        raise ValidationError({"role": f"Unknown team role {role!r}."})
    email = get_user_model().objects.normalize_email(email.strip())
    token = secrets.token_urlsafe(32)
    invitation = Invitation(
        team=team,
        email=email,
        role=role,
        is_auditor=is_auditor,
        token_hash=token_sha256(token),
        invited_by=real_user(actor),
        expires_at=timezone.now() + timedelta(days=settings.MCPGOV_INVITATION_DAYS),
    )
    invitation.full_clean()
    invitation.save()
    change_record(
        team=team,
        actor=actor,
        event_type=ChangeEventType.INVITATION_SENT,
        obj=invitation,
        object_type="invitation",
        summary=f"{email} invited as {role}" + (" (auditor)" if is_auditor else ""),
    )
    return invitation, token


def invitation_url(token: str, *, request=None) -> str:
    """The link the invited person opens (absolute: from the request, or MCPGOV_PORTAL_URL)."""
    path = reverse("invitation", args=[token])
    if request is not None:
        return request.build_absolute_uri(path)
    return settings.MCPGOV_PORTAL_URL.rstrip("/") + path


def invitation_send(*, invitation: Invitation, link: str) -> None:
    send_mail(
        subject=f"You are invited to {invitation.team.name} on MCP Governance",
        message=(
            f"You are invited to join {invitation.team.name} as {invitation.role}.\n\n"
            f"Open this link to sign in or create your account and accept (single use, valid until "
            f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC):\n\n{link}\n"
        ),
        from_email=None,
        recipient_list=[invitation.email],
    )


def invitation_for_token(token: str) -> Invitation | None:
    """The open invitation this token names, or None (unknown, used, revoked or expired alike)."""
    if not token or len(token) > 200:
        return None
    invitation = Invitation.objects.select_related("team").filter(token_hash=token_sha256(token)).first()
    if invitation is None or not invitation.is_open(timezone.now()):
        return None
    return invitation


def invitation_email_matches(invitation: Invitation, user) -> bool:
    return bool(user.email) and user.email.strip().casefold() == invitation.email.casefold()


@transaction.atomic
def invitation_accept(*, token: str, user) -> Membership:
    """`user` accepts the invitation: it must be open and sent to the user's email. Single use."""
    invitation = invitation_for_token(token)
    if invitation is None:
        raise ValidationError("This invitation is no longer valid (used, revoked or expired).")
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if not invitation.is_open(timezone.now()):
        raise ValidationError("This invitation is no longer valid (used, revoked or expired).")
    if not invitation_email_matches(invitation, user):
        raise ValidationError(
            "This invitation was sent to another email address: sign in as the person it was sent to."
        )
    invitation.accepted_at, invitation.accepted_by = timezone.now(), user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    existing = Membership.objects.filter(team=invitation.team, user=user).first()
    if existing is not None:  # already a member: the invitation changes nothing
        return existing
    membership = membership_set(
        team=invitation.team,
        user=user,
        role=invitation.role,
        is_auditor=invitation.is_auditor,
        actor=invitation.invited_by,  # the inviter granted the role (and any auditor flag)
    )
    change_record(
        team=invitation.team,
        actor=user,
        event_type=ChangeEventType.INVITATION_ACCEPTED,
        obj=invitation,
        object_type="invitation",
        summary=f"{user.get_username()} accepted the invitation as {invitation.role}",
    )
    return membership


@transaction.atomic
def invitation_signup(*, token: str, username: str, password: str):
    """Create an account from an open invitation (its email becomes the account's) and accept it."""
    invitation = invitation_for_token(token)
    if invitation is None:
        raise ValidationError("This invitation is no longer valid (used, revoked or expired).")
    if get_user_model().objects.filter(email__iexact=invitation.email).exists():
        raise ValidationError("An account with this email exists already: sign in to accept instead.")
    user_model = get_user_model()
    user = user_model(username=username, email=invitation.email)
    password_validation.validate_password(password, user)
    user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    invitation_accept(token=token, user=user)
    return user


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, actor=None) -> None:
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.accepted_at is not None or invitation.revoked_at is not None:
        raise ValidationError("This invitation was already used or revoked.")
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    change_record(
        team=invitation.team,
        actor=actor,
        event_type=ChangeEventType.INVITATION_REVOKED,
        obj=invitation,
        object_type="invitation",
        summary=f"Invitation of {invitation.email} revoked",
    )


def notifications_add(*, team: Team, users, kind: str, text: str, url: str = "") -> int:
    """Put one notice in each person's inbox (inside the caller's transaction). Returns how many."""
    from portal.models import Notification

    rows = [
        Notification(team=team, user=user, kind=kind[:40], text=text[:500], url=url[:500])
        for user in {u.pk: u for u in users}.values()
    ]
    Notification.objects.bulk_create(rows)
    return len(rows)


def notifications_mark_read(*, team: Team, user, pk: int | None = None) -> int:
    """Mark one notice (`pk`) or all of the person's notices in `team` read. Returns how many changed."""
    from django.utils import timezone

    from portal.models import Notification

    qs = Notification.objects.filter(team=team, user=user, read_at__isnull=True)
    if pk is not None:
        qs = qs.filter(pk=pk)
    return qs.update(read_at=timezone.now())
