"""The one way to ask "may this user do this in this team?", for views and the API alike.

Team roles map to a fixed set of permissions on the Team object, granted through
django-guardian when a membership is created or changed. Every check goes
through `has_team_perm`, every list starts from `TeamScopedQuerySet.restrict`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.core.exceptions import PermissionDenied
from django.db import models
from guardian.shortcuts import get_objects_for_user

from portal.choices import TeamRole

if TYPE_CHECKING:
    from portal.models import Team

VIEW = "view_team"
CHANGE_POLICY = "change_policy"
MANAGE_MEMBERS = "manage_members"
MANAGE_CLIENTS = "manage_clients"
ACKNOWLEDGE_SESSION = "acknowledge_session"
RELEASE_SESSION = "release_session"
VIEW_PAYLOADS = "view_payloads"
REQUEST_ACCESS = "request_access"
REVIEW_ACCESS = "review_access"
TOGGLE_FLAGS = "toggle_flags"
MANAGE_INCIDENTS = "manage_incidents"

ALL_TEAM_PERMISSIONS = (
    VIEW,
    CHANGE_POLICY,
    MANAGE_MEMBERS,
    MANAGE_CLIENTS,
    ACKNOWLEDGE_SESSION,
    RELEASE_SESSION,
    VIEW_PAYLOADS,
    REQUEST_ACCESS,
    REVIEW_ACCESS,
    TOGGLE_FLAGS,
    MANAGE_INCIDENTS,
)

# Using the product is kept apart from administering it: reviewers acknowledge,
# release and run incidents but never edit policy; viewers only read. Payload access is the
# auditor flag's alone, whatever the role (an admin without it sees summaries only).
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    TeamRole.ADMIN: frozenset(set(ALL_TEAM_PERMISSIONS) - {VIEW_PAYLOADS}),
    TeamRole.REVIEWER: frozenset(
        {VIEW, ACKNOWLEDGE_SESSION, RELEASE_SESSION, REVIEW_ACCESS, TOGGLE_FLAGS, MANAGE_INCIDENTS}
    ),
    TeamRole.REQUESTER: frozenset({VIEW, REQUEST_ACCESS}),
    TeamRole.VIEWER: frozenset({VIEW}),
}


def permissions_for(role: str, *, is_auditor: bool = False) -> frozenset[str]:
    perms = ROLE_PERMISSIONS[role]
    return perms | {VIEW_PAYLOADS} if is_auditor else perms


def has_team_perm(user, perm: str, team: Team | None) -> bool:
    """True if `user` holds team permission `perm` (codename, e.g. "change_policy") on `team`."""
    if team is None or user is None or not user.is_authenticated or not user.is_active:
        return False
    if perm == VIEW_PAYLOADS:
        # Not even a superuser bypasses the auditor flag: payload access is granted per team, by
        # someone else, and recorded (portal.services.membership_set).
        from portal.models import Membership

        return Membership.objects.filter(team=team, user=user, is_auditor=True).exists()
    return user.has_perm(f"portal.{perm}", team)


def require_team_perm(user, perm: str, team: Team | None) -> None:
    """Raise PermissionDenied unless the user holds `perm` on `team` (used by services)."""
    if not has_team_perm(user, perm, team):
        raise PermissionDenied(f"You do not have the '{perm.replace('_', ' ')}' permission in this team.")


def teams_for_user(user, perm: str = VIEW):
    """The teams on which `user` holds `perm` (a Team queryset; empty for anonymous users)."""
    from portal.models import Team

    if user is None or not user.is_authenticated or not user.is_active:
        return Team.objects.none()
    return get_objects_for_user(user, f"portal.{perm}", klass=Team, accept_global_perms=False)


class TeamScopedQuerySet(models.QuerySet):
    """Querysets of team-owned objects. `team_path` names the lookup to the owning team."""

    team_path = "team"

    def restrict(self, user, perm: str = VIEW):
        """Only objects of teams where `user` holds `perm`. Every view starts here."""
        return self.filter(**{f"{self.team_path}__in": teams_for_user(user, perm)})

    def for_team(self, team):
        return self.filter(**{self.team_path: team})


def team_scoped_manager(team_path: str = "team"):
    """A manager whose queryset restricts through `team_path` (e.g. "environment__team")."""
    queryset_class = type("TeamScopedQuerySet", (TeamScopedQuerySet,), {"team_path": team_path})
    return models.Manager.from_queryset(queryset_class)()
