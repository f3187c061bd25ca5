"""Team roles map to guardian grants; restricted querysets never leak another team's objects."""

import pytest

from governance.models import McpServer
from governance.services.servers import server_create
from portal import permissions as p
from portal.choices import TeamRole
from portal.models import Membership
from portal.services import membership_remove, membership_set

EXPECTED = {
    TeamRole.ADMIN: set(p.ALL_TEAM_PERMISSIONS) - {p.VIEW_PAYLOADS},  # payloads: the auditor flag only
    TeamRole.REVIEWER: {
        p.VIEW,
        p.ACKNOWLEDGE_SESSION,
        p.RELEASE_SESSION,
        p.REVIEW_ACCESS,
        p.TOGGLE_FLAGS,
        p.MANAGE_INCIDENTS,
    },
    TeamRole.REQUESTER: {p.VIEW, p.REQUEST_ACCESS},
    TeamRole.VIEWER: {p.VIEW},
}


@pytest.mark.parametrize("role", list(EXPECTED))
def test_each_role_holds_exactly_its_permissions(team, role):
    from tests.factories import make_member

    user = make_member(team, role)
    held = {perm for perm in p.ALL_TEAM_PERMISSIONS if p.has_team_perm(user, perm, team)}
    assert held == EXPECTED[role]


def test_reviewer_can_acknowledge_but_not_edit_policy(team, reviewer):
    assert p.has_team_perm(reviewer, p.ACKNOWLEDGE_SESSION, team)
    assert not p.has_team_perm(reviewer, p.CHANGE_POLICY, team)


def test_auditor_flag_grants_payload_access(team, reviewer):
    assert not p.has_team_perm(reviewer, p.VIEW_PAYLOADS, team)
    membership_set(team=team, user=reviewer, role=TeamRole.REVIEWER, is_auditor=True)
    reviewer = type(reviewer).objects.get(pk=reviewer.pk)  # guardian caches per user object
    assert p.has_team_perm(reviewer, p.VIEW_PAYLOADS, team)


def test_admin_without_the_auditor_flag_has_no_payload_access(team, admin):
    assert p.has_team_perm(admin, p.CHANGE_POLICY, team)
    assert not p.has_team_perm(admin, p.VIEW_PAYLOADS, team)


def test_a_superuser_needs_the_auditor_flag_too(team):
    from tests.factories import UserFactory

    root = UserFactory(username="root", is_superuser=True, is_staff=True)
    assert p.has_team_perm(root, p.CHANGE_POLICY, team)  # site admins administer every team
    assert not p.has_team_perm(root, p.VIEW_PAYLOADS, team)
    membership_set(team=team, user=root, role=TeamRole.VIEWER, is_auditor=True)
    assert p.has_team_perm(root, p.VIEW_PAYLOADS, team)


def test_nobody_grants_themself_payload_access_and_another_admin_can(team, admin):
    from django.core.exceptions import ValidationError

    from portal.models import ChangeRecord
    from tests.factories import UserFactory, make_member

    with pytest.raises(ValidationError, match="Nobody can grant themself payload access"):
        membership_set(team=team, user=admin, role=TeamRole.ADMIN, is_auditor=True, actor=admin)
    assert not Membership.objects.get(team=team, user=admin).is_auditor
    root = UserFactory(username="root", is_superuser=True)
    with pytest.raises(ValidationError, match="Nobody can grant themself"):  # not even a site admin
        membership_set(team=team, user=root, role=TeamRole.ADMIN, is_auditor=True, actor=root)
    assert not Membership.objects.filter(user=root).exists()
    second = make_member(team, TeamRole.ADMIN, username="second-admin")
    membership_set(team=team, user=admin, role=TeamRole.ADMIN, is_auditor=True, actor=second)
    assert p.has_team_perm(type(admin).objects.get(pk=admin.pk), p.VIEW_PAYLOADS, team)
    record = ChangeRecord.objects.filter(team=team, actor=second).latest("id")
    assert record.changes == {"is_auditor": [False, True]}
    # keeping a flag one already holds, or dropping it, is not a grant
    membership_set(team=team, user=admin, role=TeamRole.ADMIN, is_auditor=True, actor=admin)
    membership_set(team=team, user=admin, role=TeamRole.ADMIN, is_auditor=False, actor=admin)
    assert not Membership.objects.get(team=team, user=admin).is_auditor


def test_role_change_and_removal_take_permissions_away(team, admin):
    from tests.factories import make_member

    make_member(team, TeamRole.ADMIN, username="second-admin")  # a team always keeps one admin
    membership_set(team=team, user=admin, role=TeamRole.VIEWER)
    admin = type(admin).objects.get(pk=admin.pk)
    assert not p.has_team_perm(admin, p.CHANGE_POLICY, team)
    membership_remove(membership=Membership.objects.get(team=team, user=admin))
    admin = type(admin).objects.get(pk=admin.pk)
    assert not p.has_team_perm(admin, p.VIEW, team)
    assert list(p.teams_for_user(admin)) == []


def test_a_role_change_is_seen_at_once_by_the_user_object_that_was_checked_before(team, admin):
    """GUARDIAN_AUTO_PREFETCH keeps a user's grants on the user object: a change through it evicts them
    (single sign-on changes the logged-in user's roles in the request that then checks them)."""
    from tests.factories import make_member

    make_member(team, TeamRole.ADMIN, username="second-admin")
    assert p.has_team_perm(admin, p.CHANGE_POLICY, team)  # the grants are now cached on `admin`
    membership_set(team=team, user=admin, role=TeamRole.VIEWER)
    assert not p.has_team_perm(admin, p.CHANGE_POLICY, team)
    assert p.has_team_perm(admin, p.VIEW, team)
    membership_set(team=team, user=admin, role=TeamRole.ADMIN)  # as single sign-on does at login
    assert p.has_team_perm(admin, p.CHANGE_POLICY, team)


def test_every_role_change_leaves_exactly_the_new_roles_grants_in_guardian(team, other_team, admin):
    """membership_set writes guardian's rows in bulk: after each change guardian itself (get_perms, a fresh
    user object) reports exactly the new role's grants on this team, and another team's are untouched."""
    from guardian.shortcuts import get_perms

    from tests.factories import make_member

    user = make_member(team, TeamRole.VIEWER, username="moving")
    membership_set(team=other_team, user=user, role=TeamRole.ADMIN)
    steps = [
        (TeamRole.ADMIN, False),
        (TeamRole.REQUESTER, True),
        (TeamRole.REVIEWER, False),
        (TeamRole.ADMIN, True),
        (TeamRole.VIEWER, False),
        (TeamRole.REVIEWER, True),
    ]
    for role, auditor in steps:
        membership_set(team=team, user=user, role=role, is_auditor=auditor)
        fresh = type(user).objects.get(pk=user.pk)
        expected = EXPECTED[role] | ({p.VIEW_PAYLOADS} if auditor else set())
        assert set(get_perms(fresh, team)) == expected, (role, auditor)
        assert set(get_perms(fresh, other_team)) == EXPECTED[TeamRole.ADMIN]
    membership_remove(membership=Membership.objects.get(team=team, user=user))
    assert get_perms(type(user).objects.get(pk=user.pk), team) == []


def test_permissions_do_not_cross_teams(team, other_team, admin, outsider):
    assert not p.has_team_perm(outsider, p.VIEW, team)
    assert not p.has_team_perm(admin, p.VIEW, other_team)


def test_restricted_queryset_shows_only_the_users_teams(team, other_team, admin, outsider):
    server_create(team=team, slug="github_api")
    server_create(team=other_team, slug="billing_db")
    assert [s.slug for s in McpServer.objects.restrict(admin)] == ["github_api"]
    assert [s.slug for s in McpServer.objects.restrict(outsider)] == ["billing_db"]


def test_anonymous_user_sees_nothing(team):
    from django.contrib.auth.models import AnonymousUser

    server_create(team=team, slug="github_api")
    assert not McpServer.objects.restrict(AnonymousUser()).exists()
    assert not p.has_team_perm(AnonymousUser(), p.VIEW, team)


def test_team_always_keeps_an_admin(team, admin):
    from django.core.exceptions import ValidationError

    membership = Membership.objects.get(team=team, user=admin)
    with pytest.raises(ValidationError, match="last admin cannot be demoted"):
        membership_set(team=team, user=admin, role=TeamRole.VIEWER)
    with pytest.raises(ValidationError, match="last admin and cannot be removed"):
        membership_remove(membership=membership)
    membership.refresh_from_db()
    assert membership.role == TeamRole.ADMIN
