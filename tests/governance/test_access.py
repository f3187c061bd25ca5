"""Production-access requests: filing, review rules, revocation, expiry, notifications, the API."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone
from rest_framework.test import APIClient

from governance.choices import AccessRequestStatus as Status
from governance.choices import RuleKind
from governance.models import AccessRequest, AccessReview, Environment
from governance.services.access import (
    access_request_approve,
    access_request_cancel,
    access_request_create,
    access_request_deny,
    access_request_revoke,
    access_requests_expire,
    live_grants,
)
from portal.choices import TeamRole
from portal.models import ChangeRecord
from portal.services import membership_set
from tests.factories import make_member
from tests.governance.access_helpers import file_request, policy


@pytest.fixture
def p(team):
    return policy(team)


@pytest.fixture
def reviewer2(team):
    return make_member(team, TeamRole.REVIEWER, username="acme-reviewer2")


def status_of(req) -> str:
    return AccessRequest.objects.get(pk=req.pk).status


# --- filing ---------------------------------------------------------------------


def test_request_is_filed_pending_with_deadline_and_reviewers_are_emailed(
    team, p, requester, reviewer, admin, django_capture_on_commit_callbacks
):
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        req = file_request(team, requester, p)
    assert req.status == Status.PENDING
    assert req.approvals_required == 1
    minutes = team.access_request_review_minutes
    assert (
        before + timedelta(minutes=minutes)
        <= req.review_deadline
        <= timezone.now() + timedelta(minutes=minutes)
    )
    record = ChangeRecord.objects.filter(team=team, object_type=AccessRequest._meta.verbose_name).get()
    assert record.actor == requester and "Fix INC-42" in record.summary
    # Reviewers (the reviewer and the admin) are told; the requester is not.
    recipients = sorted(addr for m in mail.outbox for addr in m.to)
    assert recipients == sorted([reviewer.email, admin.email])
    assert "needs review" in mail.outbox[0].subject and "database" in mail.outbox[0].body


@pytest.mark.parametrize(
    ("field", "kwargs", "message"),
    [
        ("reason", {"reason": "   "}, "reason is required"),
        ("ends_at", {"hours": 9}, "longer than this team allows (8 hours"),
        ("ends_at", {"hours": -1}, "end must be after the start"),
        ("starts_at", {"start_in": -2, "hours": 1}, "start cannot be in the past"),
    ],
)
def test_invalid_requests_are_refused(team, p, requester, field, kwargs, message):
    with pytest.raises(ValidationError) as exc:
        file_request(team, requester, p, **kwargs)
    assert field in exc.value.message_dict
    assert message in " ".join(exc.value.message_dict[field])
    assert not AccessRequest.objects.exists()


def test_window_is_never_longer_than_14_days_whatever_the_team_says(team, p, requester):
    team.max_access_window_hours = 14 * 24
    team.save()
    file_request(team, requester, p, hours=14 * 24)  # exactly the cap is fine
    with pytest.raises(ValidationError, match="14-day maximum"):
        file_request(team, requester, p, hours=14 * 24 + 1)
    # A team cannot raise its own limit past the cap either.
    team.max_access_window_hours = 14 * 24 + 1
    with pytest.raises(ValidationError):
        team.full_clean()


def test_servers_must_be_on_the_roles_allowlist_and_of_the_team(team, other_team, p, requester):
    with pytest.raises(ValidationError, match="shell not on the allowlist"):
        file_request(team, requester, p, servers=[p["shell"]])
    from governance.services.servers import server_create

    foreign = server_create(team=other_team, slug="billing")
    with pytest.raises(ValidationError, match="belong to this team"):
        file_request(team, requester, p, servers=[foreign])
    with pytest.raises(ValidationError, match="at least one server"):
        file_request(team, requester, p, servers=[])
    assert not AccessRequest.objects.exists()


def test_only_environments_needing_authorization_take_requests(team, p, requester):
    dev = Environment.objects.get(team=team, name="development")
    now = timezone.now()
    with pytest.raises(ValidationError, match="does not need explicit authorization"):
        access_request_create(
            team=team,
            requester=requester,
            environment=dev,
            role=p["role"],
            servers=[p["database"]],
            reason="x",
            starts_at=now,
            ends_at=now + timedelta(hours=1),
        )


def test_viewer_cannot_file_a_request(team, p, viewer, outsider):
    for user in (viewer, outsider):
        with pytest.raises(PermissionDenied):
            file_request(team, user, p)
    assert not AccessRequest.objects.exists()


def test_two_approvers_required_for_production_when_the_team_says_so(team, p, requester):
    team.production_requires_two_approvers = True
    team.save()
    assert file_request(team, requester, p).approvals_required == 2


# --- review ---------------------------------------------------------------------


def test_self_approval_is_refused_and_changes_nothing(team, p, admin):
    # An admin holds both REQUEST_ACCESS and REVIEW_ACCESS: the service still refuses.
    req = file_request(team, admin, p)
    records = ChangeRecord.objects.count()
    with pytest.raises(PermissionDenied, match="your own"):
        access_request_approve(access_request=req, reviewer=admin, reason="looks fine")
    with pytest.raises(PermissionDenied, match="your own"):
        access_request_deny(access_request=req, reviewer=admin, reason="nah")
    assert status_of(req) == Status.PENDING
    assert not AccessReview.objects.exists()
    assert ChangeRecord.objects.count() == records


def test_approval_makes_a_live_grant_and_tells_the_requester(
    team, p, requester, reviewer, django_capture_on_commit_callbacks
):
    req = file_request(team, requester, p)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        access_request_approve(access_request=req, reviewer=reviewer, reason="on call for INC-42")
    req.refresh_from_db()
    assert req.status == Status.APPROVED and req.decided_at is not None
    assert list(live_grants(environment=p["production"])) == [req]
    assert [m.to for m in mail.outbox] == [[requester.email]]
    assert "approved" in mail.outbox[0].subject
    record = ChangeRecord.objects.filter(object_id=str(req.pk), summary__startswith="Approved").get()
    assert record.actor == reviewer and "on call for INC-42" in record.summary


def test_two_distinct_approvers_when_required(team, p, requester, reviewer, reviewer2):
    team.production_requires_two_approvers = True
    team.save()
    req = file_request(team, requester, p)
    access_request_approve(access_request=req, reviewer=reviewer, reason="ok")
    assert status_of(req) == Status.PENDING
    assert not live_grants(environment=p["production"]).exists()
    # The same reviewer cannot approve twice to make up the second approval.
    with pytest.raises(ValidationError, match="decides once"):
        access_request_approve(access_request=req, reviewer=reviewer, reason="ok again")
    assert status_of(req) == Status.PENDING
    access_request_approve(access_request=req, reviewer=reviewer2, reason="ok too")
    assert status_of(req) == Status.APPROVED
    assert set(req.reviews.values_list("reviewer__username", flat=True)) == {
        reviewer.username,
        reviewer2.username,
    }


def test_requester_cannot_be_the_second_approver(team, p, admin, reviewer):
    team.production_requires_two_approvers = True
    team.save()
    req = file_request(team, admin, p)
    access_request_approve(access_request=req, reviewer=reviewer, reason="ok")
    with pytest.raises(PermissionDenied):
        access_request_approve(access_request=req, reviewer=admin, reason="me too")
    assert status_of(req) == Status.PENDING


def test_deny_ends_the_request_and_needs_a_reason(team, p, requester, reviewer):
    req = file_request(team, requester, p)
    with pytest.raises(ValidationError, match="reason is required"):
        access_request_deny(access_request=req, reviewer=reviewer, reason=" ")
    assert status_of(req) == Status.PENDING
    access_request_deny(access_request=req, reviewer=reviewer, reason="use staging")
    assert status_of(req) == Status.DENIED
    with pytest.raises(ValidationError, match="not pending"):
        access_request_approve(access_request=req, reviewer=reviewer, reason="changed my mind")


def test_requester_and_viewer_and_outsider_cannot_review(team, p, requester, viewer, outsider, admin):
    req = file_request(team, admin, p)
    for user in (requester, viewer, outsider):
        with pytest.raises(PermissionDenied):
            access_request_approve(access_request=req, reviewer=user, reason="ok")
    assert status_of(req) == Status.PENDING and not AccessReview.objects.exists()


def test_revoke_takes_the_grant_out_of_the_bundle(team, p, requester, reviewer):
    req = file_request(team, requester, p)
    access_request_approve(access_request=req, reviewer=reviewer, reason="ok")
    with pytest.raises(PermissionDenied):
        access_request_revoke(access_request=req, reviewer=requester, reason="mine")
    access_request_revoke(access_request=req, reviewer=reviewer, reason="incident over")
    req.refresh_from_db()
    assert (
        req.status == Status.REVOKED and req.revoked_by == reviewer and req.revoke_reason == "incident over"
    )
    assert not live_grants(environment=p["production"]).exists()
    with pytest.raises(ValidationError, match="Only an approved grant"):
        access_request_revoke(access_request=req, reviewer=reviewer, reason="again")


def test_requester_cancels_own_request_only(team, p, requester, reviewer):
    other = make_member(team, TeamRole.REQUESTER, username="acme-requester2")
    req = file_request(team, requester, p)
    with pytest.raises(PermissionDenied):
        access_request_cancel(access_request=req, requester=other)
    with pytest.raises(PermissionDenied):
        access_request_cancel(access_request=req, requester=reviewer)
    access_request_cancel(access_request=req, requester=requester, reason="not needed")
    assert status_of(req) == Status.CANCELLED


def test_approval_and_revocation_publish_the_grant_in_the_bundle_at_once(
    team, p, requester, reviewer, django_capture_on_commit_callbacks
):
    from governance.models import PolicyBundle

    req = file_request(team, requester, p)

    def grants():
        latest = PolicyBundle.objects.filter(environment=p["production"]).order_by("-version").first()
        return [] if latest is None else latest.content["grants"]

    with django_capture_on_commit_callbacks(execute=True):
        access_request_approve(access_request=req, reviewer=reviewer, reason="ok")
    [grant] = grants()
    assert (
        grant["id"] == str(req.pk) and grant["role"] == "database_agent" and grant["servers"] == ["database"]
    )
    # The grant carries its end, so the gateway stops honouring it then even if no task runs.
    assert datetime.fromisoformat(grant["ends_at"]) == req.ends_at
    with django_capture_on_commit_callbacks(execute=True):
        access_request_revoke(access_request=req, reviewer=reviewer, reason="done")
    assert grants() == []


# --- expiry ---------------------------------------------------------------------


def test_expiry_is_idempotent_and_expires_both_kinds(
    team, p, requester, reviewer, django_capture_on_commit_callbacks
):
    pending = file_request(team, requester, p)
    grant = file_request(team, requester, p, hours=1)
    access_request_approve(access_request=grant, reviewer=reviewer, reason="ok")
    later = file_request(team, requester, p, hours=8)
    access_request_approve(access_request=later, reviewer=reviewer, reason="ok")
    mail.outbox.clear()
    # Before any deadline: nothing happens.
    assert access_requests_expire(now=timezone.now()) == 0
    # Past the review deadline (60 min) and past the first grant's end (1 h), not the second's.
    moment = timezone.now() + timedelta(hours=1, minutes=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert access_requests_expire(now=moment) == 2
    assert status_of(pending) == Status.EXPIRED
    assert status_of(grant) == Status.EXPIRED
    assert status_of(later) == Status.APPROVED
    assert sorted(m.to[0] for m in mail.outbox) == [requester.email, requester.email]
    records = ChangeRecord.objects.filter(summary__startswith="Expired").count()
    assert records == 2
    # Running it again changes nothing and sends nothing.
    mail.outbox.clear()
    assert access_requests_expire(now=moment) == 0
    assert ChangeRecord.objects.filter(summary__startswith="Expired").count() == records
    assert mail.outbox == []
    assert list(live_grants(environment=p["production"], now=moment)) == [later]


def test_an_expired_request_can_no_longer_be_approved(team, p, requester, reviewer):
    req = file_request(team, requester, p)
    AccessRequest.objects.filter(pk=req.pk).update(review_deadline=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ValidationError, match="deadline has passed"):
        access_request_approve(access_request=req, reviewer=reviewer, reason="late")
    assert status_of(req) == Status.PENDING


def test_role_change_takes_permissions_away_from_a_reviewer(team, p, requester, reviewer):
    req = file_request(team, requester, p)
    membership_set(team=team, user=reviewer, role=TeamRole.VIEWER)
    reviewer = type(reviewer).objects.get(pk=reviewer.pk)
    with pytest.raises(PermissionDenied):
        access_request_approve(access_request=req, reviewer=reviewer, reason="ok")


# --- API --------------------------------------------------------------------------


def api(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def create_payload(p, **overrides):
    now = timezone.now()
    data = {
        "environment": p["production"].name,
        "role": p["role"].name,
        "servers": [p["database"].slug],
        "reason": "Fix INC-42",
        "starts_at": now.isoformat(),
        "ends_at": (now + timedelta(hours=2)).isoformat(),
    }
    data.update(overrides)
    return data


LIST = "/api/v1/access-requests/"


def test_api_create_list_and_retrieve(team, p, requester):
    resp = api(requester).post(LIST, create_payload(p), format="json")
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    assert (
        body["status"] == "pending"
        and body["servers"] == ["database"]
        and body["requester"] == requester.username
    )
    assert (
        body["approvals_required"] == 1
        and body["environment"] == "production"
        and body["role"] == "database_agent"
    )
    listed = api(requester).get(LIST).json()
    assert [r["id"] for r in listed["results"]] == [body["id"]]
    assert api(requester).get(f"{LIST}{body['id']}/").json()["reason"] == "Fix INC-42"


def test_api_create_validation_errors_are_400_with_the_field(team, p, requester):
    resp = api(requester).post(LIST, create_payload(p, reason=""), format="json")
    assert resp.status_code == 400
    assert resp.json()["code"] == "invalid" and "reason" in resp.json()["errors"]
    resp = api(requester).post(LIST, create_payload(p, servers=["nope"]), format="json")
    assert resp.status_code == 400 and "servers" in resp.json()["errors"]
    assert not AccessRequest.objects.exists()


def test_api_self_approval_is_refused_and_changes_nothing(team, p, admin):
    req = file_request(team, admin, p)
    resp = api(admin).post(f"{LIST}{req.pk}/approve/", {"reason": "me"}, format="json")
    assert resp.status_code == 403
    assert "your own" in resp.json()["detail"]
    assert status_of(req) == Status.PENDING and not AccessReview.objects.exists()


def test_api_approve_deny_revoke(team, p, requester, reviewer):
    a = file_request(team, requester, p)
    b = file_request(team, requester, p)
    resp = api(reviewer).post(f"{LIST}{a.pk}/approve/", {"reason": "ok"}, format="json")
    assert resp.status_code == 200 and resp.json()["status"] == "approved"
    assert resp.json()["reviews"][0]["reviewer"] == reviewer.username
    resp = api(reviewer).post(f"{LIST}{b.pk}/deny/", {"reason": "no"}, format="json")
    assert resp.status_code == 200 and resp.json()["status"] == "denied"
    resp = api(reviewer).post(f"{LIST}{a.pk}/revoke/", {"reason": "done"}, format="json")
    assert resp.status_code == 200 and resp.json()["status"] == "revoked"
    resp = api(reviewer).post(f"{LIST}{a.pk}/revoke/", {"reason": "again"}, format="json")
    assert resp.status_code == 400


def test_api_cancel_by_requester(team, p, requester, reviewer):
    req = file_request(team, requester, p)
    assert api(reviewer).post(f"{LIST}{req.pk}/cancel/", {}, format="json").status_code == 403
    resp = api(requester).post(f"{LIST}{req.pk}/cancel/", {"reason": "no longer needed"}, format="json")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"


@pytest.mark.parametrize("action", ["approve", "deny", "revoke"])
def test_api_permission_matrix_for_decisions(team, p, requester, viewer, outsider, reviewer, action):
    req = file_request(team, requester, p)
    if action == "revoke":
        access_request_approve(access_request=req, reviewer=reviewer, reason="ok")
    before = status_of(req)
    url = f"{LIST}{req.pk}/{action}/"
    assert APIClient().post(url, {"reason": "x"}, format="json").status_code in (401, 403)
    assert api(viewer).post(url, {"reason": "x"}, format="json").status_code == 403
    assert api(outsider).post(url, {"reason": "x"}, format="json").status_code == 404
    assert status_of(req) == before


def test_api_read_permission_matrix(team, p, requester, viewer, outsider):
    req = file_request(team, requester, p)
    assert APIClient().get(LIST).status_code in (401, 403)
    assert APIClient().get(f"{LIST}{req.pk}/").status_code in (401, 403)
    assert api(outsider).get(f"{LIST}{req.pk}/").status_code == 404
    assert api(outsider).get(LIST).json()["results"] == []
    assert api(viewer).get(f"{LIST}{req.pk}/").status_code == 200


def test_api_create_permission_matrix(team, p, viewer, outsider):
    assert APIClient().post(LIST, create_payload(p), format="json").status_code in (401, 403)
    assert api(viewer).post(LIST, create_payload(p), format="json").status_code == 403
    # Another team's admin names this team's environment: it is not theirs, so it does not exist for them.
    resp = api(outsider).post(LIST, create_payload(p), format="json")
    assert resp.status_code == 400
    # Naming the team does not help: it is not theirs, answered exactly like a team that does not exist.
    theirs = api(outsider).post(LIST, create_payload(p, team="acme"), format="json")
    nowhere = api(outsider).post(LIST, create_payload(p, team="no-such-team"), format="json")
    assert theirs.status_code == nowhere.status_code == 400
    assert theirs.json() == nowhere.json() and theirs.json()["errors"] == {"team": ["No such team."]}
    assert not AccessRequest.objects.exists()


def test_api_filter_by_status_and_mine(team, p, requester, reviewer):
    a = file_request(team, requester, p)
    b = file_request(team, requester, p)
    access_request_approve(access_request=b, reviewer=reviewer, reason="ok")
    ids = [r["id"] for r in api(reviewer).get(LIST, {"status": "pending"}).json()["results"]]
    assert ids == [a.pk]
    assert api(reviewer).get(LIST, {"mine": "1"}).json()["results"] == []


# --- pages --------------------------------------------------------------------------------------


def test_pages_file_a_ticket_and_review_it(client, team, p, requester, reviewer):
    client.force_login(requester)
    assert client.get("/governance/access/new/").status_code == 200
    now = timezone.now()
    resp = client.post(
        "/governance/access/new/",
        {
            "environment": p["production"].pk,
            "role": p["role"].pk,
            "servers": [p["database"].pk],
            "starts_at": now.strftime("%Y-%m-%dT%H:%M"),
            "ends_at": (now + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"),
            "reason": "INC-42",
        },
    )
    req = AccessRequest.objects.get()
    assert resp.status_code == 302 and resp["Location"].endswith(f"/governance/access/{req.pk}/")
    html = client.get(f"/governance/access/{req.pk}/").content.decode()
    assert "data-countdown" in html and 'id="decision-form"' not in html
    # The requester's own POST to approve is refused and changes nothing.
    assert client.post(f"/governance/access/{req.pk}/approve/", {"reason": "me"}).status_code == 403
    assert status_of(req) == Status.PENDING
    client.force_login(reviewer)
    assert f"#{req.pk}" in client.get("/governance/access/").content.decode()
    assert 'id="decision-form"' in client.get(f"/governance/access/{req.pk}/").content.decode()
    assert client.post(f"/governance/access/{req.pk}/approve/", {"reason": "ok"}).status_code == 302
    assert status_of(req) == Status.APPROVED
    html = client.get(f"/governance/access/{req.pk}/").content.decode()
    assert 'id="revoke-form"' in html and "left" in html


def test_page_form_shows_the_services_errors(client, team, p, requester):
    client.force_login(requester)
    now = timezone.now()
    resp = client.post(
        "/governance/access/new/",
        {
            "environment": p["production"].pk,
            "role": p["role"].pk,
            "servers": [p["database"].pk],
            "starts_at": now.strftime("%Y-%m-%dT%H:%M"),
            "ends_at": (now + timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M"),
            "reason": "x",
        },
    )
    assert resp.status_code == 200 and "longer than this team allows" in resp.content.decode()
    assert not AccessRequest.objects.exists()


@pytest.mark.parametrize("action", ["approve", "deny", "revoke", "cancel"])
def test_pages_permission_matrix(client, team, p, requester, viewer, outsider, reviewer, action):
    req = file_request(team, requester, p)
    if action == "revoke":
        access_request_approve(access_request=req, reviewer=reviewer, reason="ok")
    before = status_of(req)
    url = f"/governance/access/{req.pk}/{action}/"
    assert client.post(url, {"reason": "x"}).status_code == 302  # anonymous → login
    assert client.get(f"/governance/access/{req.pk}/").status_code == 302
    client.force_login(viewer)
    assert client.post(url, {"reason": "x"}).status_code == 403
    assert client.get("/governance/access/new/").status_code == 403
    client.force_login(outsider)
    assert client.post(url, {"reason": "x"}).status_code == 404
    assert client.get(f"/governance/access/{req.pk}/").status_code == 404
    assert status_of(req) == before
    client.force_login(requester if action == "cancel" else reviewer)
    assert client.post(url, {"reason": "x"}).status_code == 302
    assert (
        status_of(req)
        == {
            "approve": Status.APPROVED,
            "deny": Status.DENIED,
            "revoke": Status.REVOKED,
            "cancel": Status.CANCELLED,
        }[action]
    )


def test_expiry_and_stale_gateway_tasks_are_scheduled_every_minute(team, p, requester):
    from django.conf import settings

    from config.celery import app
    from governance.tasks import expire_access_requests, notify_stale_clients

    schedule = settings.CELERY_BEAT_SCHEDULE
    for entry, task in [
        ("governance-expire-access", "governance.tasks.expire_access_requests"),
        ("governance-stale-clients", "governance.tasks.notify_stale_clients"),
    ]:
        assert schedule[entry] == {"task": task, "schedule": 60.0}
        assert task in app.tasks
    # The task calls the service: a request past its deadline expires when it runs.
    req = file_request(team, requester, p)
    AccessRequest.objects.filter(pk=req.pk).update(review_deadline=timezone.now() - timedelta(seconds=1))
    assert expire_access_requests.apply().get() == 1
    assert status_of(req) == Status.EXPIRED
    assert expire_access_requests.apply().get() == 0
    assert notify_stale_clients.apply().get() == 0


def test_request_form_lists_only_the_chosen_roles_servers(client, team, p, requester):
    """The servers offered are the chosen role's allowlist: never a forbidden or unrelated server,
    and a posted server outside it is refused with nothing filed."""
    from governance.services.roles import role_create, role_server_add
    from governance.services.servers import server_create

    other_role = role_create(team=team, name="web_agent")
    web = server_create(team=team, slug="web_search", category="web")
    role_server_add(role=other_role, server=web, kind=RuleKind.ALLOWED)
    client.force_login(requester)

    def offered(html: str) -> set[str]:
        return set(re.findall(r'name="servers" value="\d+" id="id_servers_\d+">\s*(\w+)</label>', html))

    first = client.get("/governance/access/new/").content.decode()  # roles by name: database_agent first
    assert offered(first) == {"database", "filesystem"}
    assert 'hx-get=""' in first and 'hx-select="#field-servers"' in first
    switched = client.get("/governance/access/new/", {"role": other_role.pk}).content.decode()
    assert offered(switched) == {"web_search"}
    now = timezone.now()
    resp = client.post(
        "/governance/access/new/",
        {
            "environment": p["production"].pk,
            "role": other_role.pk,
            "servers": [p["database"].pk],
            "starts_at": now.strftime("%Y-%m-%dT%H:%M"),
            "ends_at": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
            "reason": "INC-7",
        },
    )
    assert resp.status_code == 200 and "is not one of the available choices" in resp.content.decode()
    assert not AccessRequest.objects.exists()
    # Another team's role id is not a choice either (the team's queryset), and offers nothing.
    assert offered(client.get("/governance/access/new/", {"role": 10**9}).content.decode()) == {
        "database",
        "filesystem",
    }
