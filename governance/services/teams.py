"""Setting up a team's policy: the default environments and trigger settings."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction

from governance.choices import DEFAULT_ENVIRONMENTS, PRODUCTION
from governance.models import Environment, PolicyDraft, TriggerSettings
from governance.services.common import apply_fields, check_policy_perm, policy_changed
from governance.services.environments import environment_create
from portal.choices import ChangeEventType, TeamRole
from portal.models import Team
from portal.services import change_record, invitation_create, membership_set, team_create


@transaction.atomic
def team_bootstrap(*, slug: str, name: str, actor=None, **settings) -> Team:
    """Create a team with development, staging and production, and default trigger settings."""
    team = team_create(slug=slug, name=name, actor=actor, **settings)
    for order, env_name in enumerate(DEFAULT_ENVIRONMENTS):
        if not Environment.objects.filter(team=team, name=env_name).exists():
            environment_create(
                team=team,
                name=env_name,
                order=order,
                is_production=env_name == PRODUCTION,
                requires_authorization=env_name == PRODUCTION,
            )
    TriggerSettings.objects.get_or_create(team=team)
    return team


def site_admin_user_lookup(username_or_email: str):
    """The active user with this username, or else the only one with this email (None otherwise)."""
    users = get_user_model().objects.filter(is_active=True)
    value = username_or_email.strip()
    user = users.filter(username=value).first()
    if user is None and "@" in value:
        matches = list(users.filter(email__iexact=value)[:2])
        user = matches[0] if len(matches) == 1 else None
    return user


@transaction.atomic
def team_create_with_admin(*, slug: str, name: str, admin: str, actor=None) -> tuple[Team, str | None]:
    """A site admin creates a team and its first admin (a username or email).

    An existing account becomes admin at once; an email without an account gets an admin
    invitation, whose token is returned (shown once). Returns (team, token or None).
    """
    user = site_admin_user_lookup(admin)
    if user is None and "@" not in admin:
        raise ValidationError({"admin": f"There is no active user named {admin.strip()}."})
    team = team_bootstrap(slug=slug, name=name, actor=actor)
    if user is not None:
        membership_set(team=team, user=user, role=TeamRole.ADMIN, actor=actor)
        return team, None
    _, token = invitation_create(team=team, email=admin, role=TeamRole.ADMIN, actor=actor)
    return team, token


TEAM_POLICY_SETTINGS = (
    "bundle_ttl_seconds",
    "policy_edits_immediate",
    "policy_drafts_require_second_approver",
)


@transaction.atomic
def team_policy_settings_set(*, team: Team, actor=None, **data) -> Team:
    """The team's policy settings: bundle lifetime and how edits reach the bundle (drafts or at once).

    A new lifetime re-issues every bundle (the re-issue rule sees a bundle signed with another
    lifetime). Edits cannot be switched back to "publish at once" while a draft is open: its
    changes would be stranded.
    """
    check_policy_perm(actor, team)
    team = Team.objects.select_for_update().get(pk=team.pk)
    changes = apply_fields(team, {k: data[k] for k in TEAM_POLICY_SETTINGS if k in data})
    if not changes:
        return team
    if changes.get("policy_edits_immediate", [None, False])[1] and PolicyDraft.objects.open_for(team):
        raise ValidationError(
            {
                "policy_edits_immediate": "Publish or discard the open draft before edits publish at once again."
            }
        )
    team.full_clean()
    team.save(update_fields=list(changes))
    change_record(
        team=team, actor=actor, event_type=ChangeEventType.TEAM_SETTINGS_UPDATED, obj=team, changes=changes
    )
    if "bundle_ttl_seconds" in changes:
        policy_changed(team=team, reason=f"bundle lifetime {team.bundle_ttl_seconds} s")
    return team
