"""Membership by invitation: no username probing across teams; single-use, expiring, email-bound links."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from portal import permissions
from portal.choices import TeamRole
from portal.models import ChangeRecord, Invitation, Membership
from portal.services import invitation_create
from tests.factories import UserFactory

CSRF = re.compile(r'name="csrfmiddlewaretoken" value="[^"]*"|"X-CSRFToken": "[^"]*"')


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


@pytest.fixture
def invitee():
    """The invited person's own browser (a second client: the admin stays signed in)."""
    return Client()


def page_text(response) -> str:
    return CSRF.sub("", response.content.decode())


def test_adding_by_username_is_gone_and_answers_alike_for_existing_and_unknown_users(
    admin_client, team, outsider
):
    """An admin of Acme names Globex's admin, then a name nobody has: the same answer, no membership."""
    before = list(Membership.objects.order_by("pk").values())
    existing = admin_client.post(reverse("member-invite"), {"username": outsider.username, "role": "admin"})
    unknown = admin_client.post(reverse("member-invite"), {"username": "nobody-at-all", "role": "admin"})
    assert existing.status_code == unknown.status_code == 200
    assert page_text(existing) == page_text(unknown)
    assert "globex-admin" not in page_text(existing)
    assert list(Membership.objects.order_by("pk").values()) == before
    assert not Invitation.objects.exists()


def test_inviting_an_existing_users_email_answers_like_an_unknown_email(admin_client, team, outsider):
    before = list(Membership.objects.order_by("pk").values())
    answers = []
    for email in (outsider.email, "nobody@example.com"):
        response = admin_client.post(reverse("member-invite"), {"email": email, "role": "admin"}, follow=True)
        assert response.status_code == 200
        answers.append(page_text(response).replace(email, "EMAIL"))
    # the pages differ only in the (random) link and the invitations' expiry times (seconds apart)
    link = re.compile(r"http://testserver/invitation/[^/<\s]+/")
    when = re.compile(r"<time [^>]*>[^<]*</time>")
    assert when.sub("WHEN", link.sub("LINK", answers[0])) == when.sub("WHEN", link.sub("LINK", answers[1]))
    assert "Invitation sent to EMAIL as admin." in answers[0]
    assert list(Membership.objects.order_by("pk").values()) == before  # nobody joined yet
    assert Invitation.objects.filter(team=team).count() == 2


def invite(admin_client, email="newcomer@example.com", role="reviewer", **extra) -> str:
    response = admin_client.post(reverse("member-invite"), {"email": email, "role": role, **extra})
    assert response.status_code == 200
    match = re.search(
        r'<code id="invitation-link" class="token">http://testserver(/invitation/[^<]+/)</code>',
        response.content.decode(),
    )
    assert match, "the link is shown once"
    return match.group(1)


def test_invitation_link_is_emailed_shown_once_and_stored_hashed(admin_client, team):
    path = invite(admin_client)
    token = path.split("/")[2]
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["newcomer@example.com"]
    assert f"http://testserver{path}" in mail.outbox[0].body
    invitation = Invitation.objects.get(team=team)
    assert token not in invitation.token_hash and len(invitation.token_hash) == 64
    assert ChangeRecord.objects.filter(team=team, summary="newcomer@example.com invited as reviewer").exists()
    html = admin_client.get(reverse("members")).content.decode()
    assert "newcomer@example.com" in html and token not in html  # pending list, link not repeated


def test_a_new_person_creates_an_account_from_the_link_and_joins_once(admin_client, invitee, team):
    path = invite(admin_client)
    page = invitee.get(path)
    assert page.status_code == 200 and "Join Acme" in page.content.decode()
    response = invitee.post(
        path,
        {
            "username": "newcomer",
            "password": "a-long-passphrase-42",
            "password_again": "a-long-passphrase-42",
        },
    )
    assert response.status_code == 302
    user = Membership.objects.get(team=team, user__username="newcomer").user
    assert user.email == "newcomer@example.com"
    assert permissions.has_team_perm(user, permissions.ACKNOWLEDGE_SESSION, team)
    assert not permissions.has_team_perm(user, permissions.VIEW_PAYLOADS, team)
    # single use: the link is dead now, for anyone
    invitee.logout()
    again = invitee.post(
        path,
        {"username": "second", "password": "a-long-passphrase-42", "password_again": "a-long-passphrase-42"},
    )
    assert again.status_code == 404
    assert "no longer valid" in again.content.decode()
    assert not type(user).objects.filter(username="second").exists()


def test_an_existing_user_signs_in_and_accepts(admin_client, invitee, team, other_team, outsider):
    path = invite(admin_client, email=outsider.email, role="viewer")
    invitee.force_login(outsider)
    assert "Accept as globex-admin" in invitee.get(path).content.decode()
    response = invitee.post(path, follow=True)
    assert "Welcome to Acme." in [str(m) for m in response.context["messages"]]
    assert Membership.objects.get(team=team, user=outsider).role == TeamRole.VIEWER
    assert Invitation.objects.get(team=team).accepted_by == outsider


def test_a_different_signed_in_user_cannot_use_an_email_bound_invitation(
    admin_client, invitee, team, outsider
):
    """Decision (docs/deploy.md): an invitation is bound to its email; a forwarded link adds nobody else."""
    path = invite(admin_client, email="someone-else@example.com")
    invitee.force_login(outsider)
    page = invitee.get(path).content.decode()
    assert "sent to another email address" in page and "Accept as" not in page
    response = invitee.post(path)
    assert response.status_code == 403
    assert not Membership.objects.filter(team=team, user=outsider).exists()
    assert Invitation.objects.get(team=team).accepted_at is None  # still usable by the right person


def test_an_expired_invitation_cannot_be_used(admin_client, invitee, team, outsider):
    path = invite(admin_client, email=outsider.email)
    Invitation.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    invitee.force_login(outsider)
    assert invitee.post(path).status_code == 404
    assert not Membership.objects.filter(team=team, user=outsider).exists()
    assert outsider.email not in admin_client.get(reverse("members")).content.decode()  # no longer pending


def test_admin_revokes_a_pending_invitation(admin_client, invitee, team, outsider):
    path = invite(admin_client, email=outsider.email)
    invitation = Invitation.objects.get(team=team)
    response = admin_client.post(reverse("invitation-revoke", args=[invitation.pk]), follow=True)
    assert f"Invitation of {outsider.email} revoked." in [str(m) for m in response.context["messages"]]
    invitee.force_login(outsider)
    assert invitee.post(path).status_code == 404
    assert not Membership.objects.filter(team=team, user=outsider).exists()


def test_another_teams_admin_cannot_revoke_and_a_reviewer_cannot_invite(
    client, team, admin, outsider, reviewer
):
    invitation, _ = invitation_create(team=team, email="x@example.com", role="viewer", actor=admin)
    client.force_login(outsider)
    assert client.post(reverse("invitation-revoke", args=[invitation.pk])).status_code == 404
    client.force_login(reviewer)
    assert client.post(reverse("invitation-revoke", args=[invitation.pk])).status_code == 403
    assert (
        client.post(reverse("member-invite"), {"email": "y@example.com", "role": "admin"}).status_code == 403
    )
    invitation.refresh_from_db()
    assert invitation.revoked_at is None
    assert Invitation.objects.count() == 1


def test_an_auditor_invitation_from_an_admin_grants_payloads_but_not_to_the_inviter_themself(
    admin_client, invitee, team, admin
):
    admin.email = "acme-admin@example.com"
    admin.save()
    # inviting one's own email changes nothing on acceptance (already a member): no self-grant
    own = invite(admin_client, email=admin.email, role="admin", is_auditor="on")
    admin_client.post(own)
    assert not Membership.objects.get(team=team, user=admin).is_auditor
    path = invite(admin_client, email="auditor@example.com", role="viewer", is_auditor="on")
    auditor = UserFactory(username="auditor", email="auditor@example.com")
    invitee.force_login(auditor)
    invitee.post(path)
    assert permissions.has_team_perm(auditor, permissions.VIEW_PAYLOADS, team)
