"""Site admins create teams and their first admin: the Teams page and `manage.py create_team`."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.urls import reverse

from governance.models import Environment
from portal import permissions
from portal.choices import TeamRole
from portal.models import Invitation, Membership, Team
from tests.factories import UserFactory


@pytest.fixture
def site_admin(db):
    return UserFactory(username="root", is_superuser=True, is_staff=True)


def test_site_admin_creates_a_team_with_its_first_admin(client, site_admin):
    alice = UserFactory(username="alice", email="alice@example.com")
    client.force_login(site_admin)
    assert reverse("site-teams") in client.get(reverse("dashboard")).content.decode()  # linked in the nav
    response = client.post(
        reverse("site-teams"),
        {"slug": "initech", "name": "Initech", "admin": "alice@example.com"},
        follow=True,
    )
    assert "Team Initech created." in [str(m) for m in response.context["messages"]]
    team = Team.objects.get(slug="initech")
    assert Membership.objects.get(team=team, user=alice).role == TeamRole.ADMIN
    assert permissions.has_team_perm(alice, permissions.MANAGE_MEMBERS, team)
    assert sorted(Environment.objects.filter(team=team).values_list("name", flat=True)) == [
        "development",
        "production",
        "staging",
    ]
    assert team.changes.filter(actor=site_admin).exists()


def test_staff_with_the_add_team_permission_is_a_site_admin(client, db):
    staff = UserFactory(username="ops", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="add_team", content_type__app_label="portal"))
    client.force_login(staff)
    assert client.get(reverse("site-teams")).status_code == 200


@pytest.mark.parametrize("who", ["team-admin", "plain-staff", "no-team"])
def test_non_site_admins_are_refused_and_nothing_changes(client, admin, who):
    user = {
        "team-admin": admin,
        "plain-staff": UserFactory(username="staffer", is_staff=True),
        "no-team": UserFactory(username="loner"),
    }[who]
    UserFactory(username="alice")
    client.force_login(user)
    assert client.get(reverse("site-teams")).status_code == 403
    response = client.post(reverse("site-teams"), {"slug": "evil", "name": "Evil", "admin": "alice"})
    assert response.status_code == 403
    assert not Team.objects.filter(slug="evil").exists()
    assert reverse("site-teams") not in client.get(reverse("dashboard")).content.decode()


def test_anonymous_is_sent_to_login(client, db):
    response = client.post(reverse("site-teams"), {"slug": "evil", "name": "Evil", "admin": "x"})
    assert response.status_code == 302 and response.url.startswith(reverse("login"))
    assert not Team.objects.exists()


def test_page_explains_an_unknown_admin_and_a_taken_slug(client, site_admin, team):
    client.force_login(site_admin)
    html = client.post(
        reverse("site-teams"), {"slug": "new", "name": "New", "admin": "ghost"}
    ).content.decode()
    assert "There is no active user named ghost." in html
    html = client.post(
        reverse("site-teams"), {"slug": "acme", "name": "Again", "admin": "root"}
    ).content.decode()
    assert "already exists" in html
    assert list(Team.objects.values_list("slug", flat=True)) == ["acme"]


def test_create_team_command(db, capsys):
    UserFactory(username="bob")
    call_command("create_team", "--slug", "hooli", "--name", "Hooli", "--admin", "bob")
    assert "Team hooli (Hooli) created." in capsys.readouterr().out
    team = Team.objects.get(slug="hooli")
    assert Membership.objects.get(team=team).user.username == "bob"
    # an email without an account: an admin invitation, its link printed once
    call_command(
        "create_team", "--slug", "piedpiper", "--name", "Pied Piper", "--admin", "richard@example.com"
    )
    out = capsys.readouterr().out
    assert "/invitation/" in out
    invitation = Invitation.objects.get(team__slug="piedpiper")
    assert (invitation.email, invitation.role) == ("richard@example.com", TeamRole.ADMIN)
    with pytest.raises(CommandError, match="no active user named ghost"):
        call_command("create_team", "--slug", "x", "--name", "X", "--admin", "ghost")
    assert not Team.objects.filter(slug="x").exists()
