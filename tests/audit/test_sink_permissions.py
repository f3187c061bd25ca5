"""Who may see and manage SIEM sinks, on the pages and in the API (denials change nothing).

Status is for reviewers and admins (acknowledge_session); managing is for admins (manage_clients).
Secrets are write-only everywhere.
"""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AuditSink
from audit.services.streaming import sink_create
from portal.choices import TeamRole
from tests.audit.conftest import person
from tests.factories import make_member

pytestmark = pytest.mark.django_db


@pytest.fixture
def sink(team, admin):
    return sink_create(
        team=team,
        actor=admin,
        name="siem",
        kind="webhook",
        url="https://siem.example.test/in",
        secret="top-secret-1",
    )


def browser(user=None) -> Client:
    c = Client()
    if user is not None:
        c.force_login(user)
    return c


def snapshot():
    return sorted(AuditSink.objects.values_list("name", "enabled", "url", "secret_encrypted"))


def test_list_page_matrix(sink, admin, reviewer, viewer, requester, outsider, db):
    url = "/audit/sinks/"
    assert "/login/" in browser().get(url)["Location"]
    for user in (viewer, requester):
        assert browser(user).get(url).status_code == 403
    theirs = browser(outsider).get(url)
    assert theirs.status_code == 403 or b"siem.example.test" not in theirs.content
    for user in (reviewer, admin):
        page = browser(user).get(url)
        assert page.status_code == 200 and b"siem.example.test" in page.content
        assert b"top-secret-1" not in page.content
    assert b"Test-send" in browser(admin).get(url).content
    assert b"Test-send" not in browser(reviewer).get(url).content


def test_signed_in_without_a_team_gets_the_no_team_page(db):
    from tests.factories import UserFactory

    user = UserFactory(username="no-team")
    assert browser(user).get("/audit/sinks/").status_code == 404


CREATE = {
    "name": "new",
    "kind": "syslog",
    "format": "json",
    "enabled": "on",
    "host": "siem.example.test",
    "port": "6514",
}


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("new/", CREATE),
        ("{pk}/edit/", {**CREATE, "name": "renamed"}),
        ("{pk}/toggle/", {}),
        ("{pk}/delete/", {}),
    ],
)
def test_page_writes_matrix(sink, path, data, admin, reviewer, viewer, outsider):
    url = "/audit/sinks/" + path.format(pk=sink.pk)
    before = snapshot()
    assert "/login/" in browser().post(url, data)["Location"]
    for user in (viewer, reviewer):
        assert browser(user).post(url, data).status_code == 403
    if path == "new/":  # another team's admin creates only in their own team
        assert browser(outsider).post(url, data).status_code == 302
        assert AuditSink.objects.get(name="new").team.slug == "globex"
        AuditSink.objects.filter(name="new").delete()
    else:
        assert browser(outsider).post(url, data).status_code == 404
    assert snapshot() == before
    assert browser(admin).post(url, data).status_code == 302
    assert snapshot() != before


def test_test_send_page_needs_manage_clients(sink, reviewer, outsider):
    url = f"/audit/sinks/{sink.pk}/test/"
    assert browser(reviewer).post(url).status_code == 403
    assert browser(outsider).post(url).status_code == 404


def test_api_reads_matrix(sink, admin, reviewer, viewer, outsider):
    url = "/api/v1/audit-sinks/"
    assert APIClient().get(url).status_code in (401, 403)
    assert person(viewer).get(url).json()["results"] == []
    assert person(outsider).get(url).json()["results"] == []
    assert person(outsider).get(f"{url}{sink.pk}/").status_code == 404
    rows = person(reviewer).get(url).json()["results"]
    assert [r["name"] for r in rows] == ["siem"]
    row = rows[0]
    assert row["has_secret"] is True and "secret" not in row and "secret_encrypted" not in row
    assert row["backlog_events"] == 0 and row["backlog_oldest_age_seconds"] == 0
    assert person(admin).get(f"{url}{sink.pk}/").status_code == 200


def test_api_writes_matrix(sink, admin, reviewer, viewer, outsider):
    url = "/api/v1/audit-sinks/"
    body = {
        "team": "acme",
        "name": "hec",
        "kind": "webhook",
        "url": "https://splunk.example.test/x",
        "hec": True,
        "secret": "hec-token",
    }
    before = snapshot()
    assert APIClient().post(url, body, format="json").status_code in (401, 403)
    assert person(reviewer).post(url, body, format="json").status_code == 403
    assert person(viewer).post(url, body, format="json").status_code == 403
    assert person(outsider).post(url, body, format="json").status_code == 400  # not a team they can see
    assert person(reviewer).patch(f"{url}{sink.pk}/", {"enabled": False}, format="json").status_code == 403
    assert person(outsider).patch(f"{url}{sink.pk}/", {"enabled": False}, format="json").status_code == 404
    assert person(outsider).delete(f"{url}{sink.pk}/").status_code == 404
    assert person(reviewer).post(f"{url}{sink.pk}/test/").status_code == 403
    assert snapshot() == before
    created = person(admin).post(url, body, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["has_secret"] is True and "hec-token" not in created.content.decode()
    assert (
        person(admin).patch(f"{url}{sink.pk}/", {"enabled": False}, format="json").json()["enabled"] is False
    )
    assert snapshot() != before


def test_another_admin_of_another_team_cannot_create_in_this_team(team, other_team):
    globex_admin = make_member(other_team, TeamRole.ADMIN, username="globex-2")
    response = person(globex_admin).post(
        "/api/v1/audit-sinks/",
        {"team": "acme", "name": "x", "kind": "webhook", "url": "https://a.test/"},
        format="json",
    )
    assert response.status_code == 400 and not AuditSink.objects.exists()
