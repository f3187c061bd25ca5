"""The web shell: dashboard, team switcher, team members page (the shared permission cases for the
members endpoints are in tests/governance/test_views.py)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from governance.services.servers import server_create
from portal import permissions
from portal.choices import TeamRole
from portal.models import Membership
from tests.factories import UserFactory, make_member


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


def test_dashboard_counts_and_links(admin_client, team):
    server_create(team=team, slug="github_api")
    html = admin_client.get(reverse("dashboard")).content.decode()
    assert f'href="{reverse("governance:server-list")}"><div class="num">1</div>' in html
    assert "Import a YAML policy" in html
    assert "Server github_api added" in html  # recent changes


def test_user_without_a_team_is_told_so(client, db):
    client.force_login(UserFactory(username="loner"))
    assert "You are not a member of any team yet" in client.get(reverse("dashboard")).content.decode()
    response = client.get(reverse("governance:server-list"))
    assert response.status_code == 404
    assert "You are not a member of any team yet" in response.content.decode()


def test_team_switcher_changes_which_teams_objects_are_shown(client, team, other_team):
    user = make_member(team, TeamRole.ADMIN, username="both")
    make_member(other_team, TeamRole.VIEWER, username="both")
    acme_server = server_create(team=team, slug="acme_only")
    globex_server = server_create(team=other_team, slug="globex_only")
    client.force_login(user)
    html = client.get(reverse("governance:server-list")).content.decode()
    assert "acme_only" in html and "globex_only" not in html
    response = client.post(
        reverse("team-switch"), {"team": "globex", "next": reverse("governance:server-list")}, follow=True
    )
    html = response.content.decode()
    assert "Now working in Globex." in messages_of(response)
    assert "globex_only" in html and "acme_only" not in html
    assert "Add server" not in html  # a viewer in Globex
    assert client.get(reverse("governance:server-detail", args=[acme_server.pk])).status_code == 404
    assert client.get(reverse("governance:server-detail", args=[globex_server.pk])).status_code == 200


def test_team_switch_refuses_a_team_the_user_is_not_in(client, admin, other_team):
    client.force_login(admin)
    assert client.post(reverse("team-switch"), {"team": "globex"}).status_code == 404


def test_forbidden_page_explains_the_missing_permission(client, viewer):
    client.force_login(viewer)
    response = client.get(reverse("governance:server-create"))
    assert response.status_code == 403
    assert "You need the &#x27;change policy&#x27; permission in Acme." in response.content.decode()


# --- team members -------------------------------------------------------------------------------


def test_members_page_lists_roles(client, team, admin, viewer):
    client.force_login(viewer)
    html = client.get(reverse("members")).content.decode()
    assert "acme-admin" in html and "acme-viewer" in html
    assert 'class="badge role-admin">Admin<' in html and 'class="badge role-viewer">Viewer<' in html


def test_admin_changes_a_role_and_the_auditor_flag(admin_client, team, viewer):
    membership = Membership.objects.get(team=team, user=viewer)
    response = admin_client.post(
        reverse("member-edit", args=[membership.pk]), {"role": "reviewer", "is_auditor": "on"}, follow=True
    )
    assert "acme-viewer is now reviewer (auditor)." in messages_of(response)
    membership.refresh_from_db()
    assert (membership.role, membership.is_auditor) == (TeamRole.REVIEWER, True)
    viewer = type(viewer).objects.get(pk=viewer.pk)
    assert permissions.has_team_perm(viewer, permissions.VIEW_PAYLOADS, team)


def test_an_admin_cannot_make_themself_an_auditor(admin_client, team, admin):
    membership = Membership.objects.get(team=team, user=admin)
    response = admin_client.post(
        reverse("member-edit", args=[membership.pk]), {"role": "admin", "is_auditor": "on"}, follow=True
    )
    assert any("Nobody can grant themself payload access" in m for m in messages_of(response))
    membership.refresh_from_db()
    assert not membership.is_auditor
    assert not permissions.has_team_perm(
        type(admin).objects.get(pk=admin.pk), permissions.VIEW_PAYLOADS, team
    )


def test_admin_removes_a_member_who_loses_access(admin_client, client, team, viewer):
    membership = Membership.objects.get(team=team, user=viewer)
    response = admin_client.post(reverse("member-remove", args=[membership.pk]), follow=True)
    assert "acme-viewer removed from Acme." in messages_of(response)
    assert not Membership.objects.filter(pk=membership.pk).exists()
    client.force_login(viewer)
    assert client.get(reverse("governance:server-list")).status_code == 404


def test_the_last_admin_can_neither_be_demoted_nor_removed(admin_client, team, admin):
    membership = Membership.objects.get(team=team, user=admin)
    response = admin_client.post(
        reverse("member-edit", args=[membership.pk]), {"role": "viewer"}, follow=True
    )
    assert any("last admin cannot be demoted" in m for m in messages_of(response))
    response = admin_client.post(reverse("member-remove", args=[membership.pk]), follow=True)
    assert "acme-admin is the team's last admin and cannot be removed." in messages_of(response)
    membership.refresh_from_db()
    assert membership.role == TeamRole.ADMIN
    # with a second admin, the first may step down
    make_member(team, TeamRole.ADMIN, username="second-admin")
    admin_client.post(reverse("member-edit", args=[membership.pk]), {"role": "viewer"})
    membership.refresh_from_db()
    assert membership.role == TeamRole.VIEWER


def test_reviewer_sees_members_without_controls(client, team, reviewer, viewer):
    client.force_login(reviewer)
    html = client.get(reverse("members")).content.decode()
    assert reverse("member-invite") not in html and "Remove" not in html and "Pending invitations" not in html
    before = list(Membership.objects.values_list("user__username", "role"))
    membership = Membership.objects.get(team=team, user=viewer)
    assert client.post(reverse("member-edit", args=[membership.pk]), {"role": "admin"}).status_code == 403
    assert client.post(reverse("member-remove", args=[membership.pk])).status_code == 403
    assert list(Membership.objects.values_list("user__username", "role")) == before
