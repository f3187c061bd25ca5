"""Who may see and do what, on every audit page and endpoint.

Each is tried by an anonymous user, a member without the permission, a member of another
team and a permitted member; denied writes change nothing. Payloads are auditors' only.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client

from audit.models import Acknowledgement, AgentSession, FailedCallExplanation, SessionDecision
from tests.audit.conftest import event, open_session, person, post_events
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def sid(gateway):
    """A halted session with a failed call (call-1) and a call waiting for approval (call-2)."""
    sid = open_session(gateway)
    batch = [event(1), event(2, status="fail"), event(3, trigger="approval_required")]
    assert post_events(gateway, sid, batch).status_code == 200
    gateway.patch(
        f"/api/v1/gateway/sessions/{sid}/",
        {"state": "halted", "trigger": "rate_limit", "reason": "limit"},
        format="json",
    )
    return sid


def browser(user=None) -> Client:
    c = Client()
    if user is not None:
        c.force_login(user)
    return c


def snapshot(sid):
    s = AgentSession.objects.get(pk=sid)
    return (
        s.state,
        s.control_version,
        list(s.pending_approvals),
        Acknowledgement.objects.count(),
        FailedCallExplanation.objects.count(),
        SessionDecision.objects.count(),
    )


WRITES = [
    ("explain", {"call_id": "call-1", "explanation": "expected failure"}),
    ("approval", {"call_id": "call-2", "decision": "approve", "reason": "fine"}),
    ("release", {"reason": "go on"}),
    ("end", {"reason": "stop"}),
]


@pytest.mark.parametrize(("action", "data"), WRITES)
def test_page_writes_matrix(sid, action, data, viewer, requester, outsider, reviewer):
    url = f"/audit/sessions/{sid}/{action}/"
    before = snapshot(sid)
    anonymous = browser().post(url, data)
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    for user in (viewer, requester):
        assert browser(user).post(url, data).status_code == 403
    assert browser(outsider).post(url, data).status_code == 404
    assert snapshot(sid) == before
    response = browser(reviewer).post(url, data)
    assert response.status_code == 302
    assert snapshot(sid) != before


def test_page_acknowledge_matrix(gateway, viewer, outsider, reviewer):
    sid = open_session(gateway)
    post_events(gateway, sid, [event(1), event(2)])
    gateway.patch(f"/api/v1/gateway/sessions/{sid}/", {"state": "ended"}, format="json")
    url = f"/audit/sessions/{sid}/acknowledge/"
    assert "/login/" in browser().post(url, {"note": "x"})["Location"]
    assert browser(viewer).post(url, {"note": "x"}).status_code == 403
    assert browser(outsider).post(url, {"note": "x"}).status_code == 404
    assert not Acknowledgement.objects.exists()
    assert browser(reviewer).post(url, {"note": "x"}).status_code == 302
    assert Acknowledgement.objects.get().reviewer == reviewer


@pytest.mark.parametrize("path", ["", "export/?format=jsonl"])
def test_session_pages_are_team_scoped(sid, path, viewer, outsider):
    url = f"/audit/sessions/{sid}/{path}"
    assert "/login/" in browser().get(url)["Location"]
    assert browser(outsider).get(url).status_code == 404
    assert browser(viewer).get(url).status_code == 200


@pytest.mark.parametrize("url", ["/audit/sessions/", "/audit/halted/", "/audit/sessions/export/?format=csv"])
def test_lists_show_only_the_own_team(sid, url, viewer, outsider):
    assert "/login/" in browser().get(url)["Location"]
    mine = browser(viewer).get(url)
    assert mine.status_code == 200
    theirs = browser(outsider).get(url)
    assert theirs.status_code == 200
    content = lambda r: b"".join(r.streaming_content) if r.streaming else r.content  # noqa: E731
    assert sid.encode()[:8] in content(mine)
    assert sid.encode()[:8] not in content(theirs)


def test_viewer_sees_no_decision_forms(sid, viewer, reviewer):
    page = browser(viewer).get(f"/audit/sessions/{sid}/").content.decode()
    assert "Allow to continue" not in page and "Explain this failed call" not in page
    page = browser(reviewer).get(f"/audit/sessions/{sid}/").content.decode()
    assert "Allow to continue" in page and "Explain this failed call" in page


API_WRITES = [
    ("explanations/", {"call_id": "call-1", "explanation": "expected"}),
    ("approvals/", {"call_id": "call-2", "decision": "deny", "reason": "no"}),
    ("release/", {"reason": "go on"}),
    ("end/", {"reason": "stop"}),
]


@pytest.mark.parametrize(("path", "data"), API_WRITES)
def test_api_writes_matrix(sid, path, data, viewer, outsider, reviewer, gateway):
    from rest_framework.test import APIClient

    url = f"/api/v1/sessions/{sid}/{path}"
    before = snapshot(sid)
    assert APIClient().post(url, data, format="json").status_code in (401, 403)
    assert person(viewer).post(url, data, format="json").status_code == 403
    assert person(outsider).post(url, data, format="json").status_code == 404
    assert gateway.post(url, data, format="json").status_code == 403  # a gateway never decides for a person
    assert snapshot(sid) == before
    assert person(reviewer).post(url, data, format="json").status_code in (200, 201)
    assert snapshot(sid) != before


def test_api_reads_matrix(sid, viewer, outsider):
    from rest_framework.test import APIClient

    for path in ("", "events/", "explanations/", "approvals/", "acknowledgement/"):
        url = f"/api/v1/sessions/{sid}/{path}"
        assert APIClient().get(url).status_code in (401, 403)
        assert person(outsider).get(url).status_code == 404
        assert person(viewer).get(url).status_code == 200
    assert [s["id"] for s in person(viewer).get("/api/v1/sessions/").json()["results"]] == [sid]
    assert person(outsider).get("/api/v1/sessions/").json()["results"] == []
    assert person(viewer).get("/api/v1/sessions/?state=ended").json()["results"] == []
    assert len(person(viewer).get("/api/v1/sessions/?state=halted&status=fail").json()["results"]) == 1


def test_payloads_only_for_auditors_in_api(sid, reviewer, auditor):
    plain = person(reviewer).get(f"/api/v1/sessions/{sid}/events/").json()
    assert plain["payloads_visible"] is False
    assert all("arguments" not in e and "result" not in e for e in plain["results"])
    assert plain["results"][1]["result_summary"] == "PR#1 created" and plain["results"][0]["args_summary"]
    full = person(auditor).get(f"/api/v1/sessions/{sid}/events/").json()
    assert full["payloads_visible"] is True
    assert full["results"][0]["arguments"]["title"] == "PR 1"
    assert full["results"][1]["result"] == {"number": 1, "url": "https://example.test/pr/1"}


def test_payloads_only_for_auditors_in_pages_and_exports(sid, reviewer, auditor):
    secret = "https://example.test/pr/1"
    page = browser(reviewer).get(f"/audit/sessions/{sid}/").content.decode()
    assert "PR#1 created" in page and "title=PR 1, base=main" in page
    assert secret not in page and "payloads are shown to auditors only" in page
    assert secret in browser(auditor).get(f"/audit/sessions/{sid}/").content.decode()
    for fmt in ("jsonl", "csv", "mcp_audit"):
        plain = b"".join(
            browser(reviewer).get(f"/audit/sessions/{sid}/export/?format={fmt}").streaming_content
        )
        full = b"".join(browser(auditor).get(f"/audit/sessions/{sid}/export/?format={fmt}").streaming_content)
        assert b"PR#1 created" in plain
        # "weight" and the PR url exist only in the argument and result payloads.
        assert b"weight" not in plain and b"example.test/pr/1" not in plain
        assert b"weight" in full
        if fmt != "mcp_audit":  # the MCP_AUDIT line carries the result summary, as in the seed
            assert b"example.test/pr/1" in full
    record = json.loads(
        b"".join(
            browser(auditor).get(f"/audit/sessions/{sid}/export/?format=jsonl").streaming_content
        ).splitlines()[0]
    )
    assert record["arguments"]["title"] == "PR 1" and record["seq"] == 1


@pytest.mark.parametrize("superuser", [False, True], ids=["admin", "admin-and-superuser"])
def test_an_admin_without_the_auditor_flag_sees_no_payloads(sid, team, admin, auditor, superuser):
    """Admin rights are not auditor rights: pages, API and exports show summaries only."""
    if superuser:
        admin.is_superuser = admin.is_staff = True
        admin.save()
    secret, argument = b"example.test/pr/1", b"weight"
    api = person(admin).get(f"/api/v1/sessions/{sid}/events/").json()
    assert api["payloads_visible"] is False
    assert all("arguments" not in e and "result" not in e for e in api["results"])
    page = browser(admin).get(f"/audit/sessions/{sid}/").content
    assert b"PR#1 created" in page and secret not in page
    for url in (f"/audit/sessions/{sid}/export/", "/audit/sessions/export/"):
        for fmt in ("jsonl", "csv", "mcp_audit"):
            plain = b"".join(browser(admin).get(f"{url}?format={fmt}").streaming_content)
            full = b"".join(browser(auditor).get(f"{url}?format={fmt}").streaming_content)
            assert b"PR#1 created" in plain and argument not in plain and secret not in plain
            assert argument in full, (url, fmt)


@pytest.mark.parametrize(
    "url",
    [
        "/audit/sessions/",
        "/audit/halted/",
        "/audit/sessions/export/",
        "/audit/sessions/00000000-0000-0000-0000-000000000001/",
    ],
)
def test_signed_in_without_a_team_gets_the_no_team_page(sid, url):
    """Signed in but a member of no team: the no-team page (404), never a server error."""
    loner = UserFactory(username="loner")
    response = browser(loner).get(url)
    assert response.status_code == 404
    assert "You are not a member of any team yet" in response.content.decode()
