"""The reviewers' session list: every filter, pagination, and the selector behind it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AgentSession
from audit.views import PAGE_SIZE
from tests.audit.conftest import event, open_session, post_events

pytestmark = pytest.mark.django_db


@pytest.fixture
def sessions(gateway, team):
    a = open_session(gateway, role="code_agent", started_at="2026-11-20T10:00:00Z")
    post_events(gateway, a, [event(1), event(2, status="fail")])
    b = open_session(gateway, role="database_agent", started_at="2026-11-22T10:00:00Z")
    post_events(
        gateway,
        b,
        [
            event(1, server="database_read_only", tool="query"),
            event(2, server="database_read_only", tool="query", status="blocked", trigger="rate_limit"),
        ],
    )
    gateway.patch(
        f"/api/v1/gateway/sessions/{b}/", {"state": "halted", "trigger": "rate_limit"}, format="json"
    )
    c = open_session(gateway, role="code_agent", started_at="2026-11-24T10:00:00Z")
    post_events(gateway, c, [event(1), event(2)])
    gateway.patch(f"/api/v1/gateway/sessions/{c}/", {"state": "ended"}, format="json")
    staging = team.environments.get(name="staging")
    d = AgentSession.objects.create(
        id="00000000-0000-4000-8000-000000000004",
        team=team,
        environment=staging,
        role="code_agent",
        started_at=datetime(2026, 11, 23, tzinfo=UTC),
    )
    return {"a": a, "b": b, "c": c, "d": str(d.pk)}


def listed(user, query: str = "") -> set[str]:
    c = Client()
    c.force_login(user)
    response = c.get(f"/audit/sessions/?{query}")
    assert response.status_code == 200
    return {str(s.pk) for s in response.context["sessions"]}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "abcd"),
        ("role=database_agent", "b"),
        ("environment=staging", "d"),
        ("server=database_read_only", "b"),
        ("server=github_api", "ac"),
        ("status=fail", "a"),
        ("status=blocked", "b"),
        ("status=success", "cd"),
        ("state=halted", "b"),
        ("state=ended", "c"),
        ("trigger=rate_limit", "b"),
        ("date_from=2026-11-22&date_to=2026-11-23", "bd"),
        ("date_from=2026-11-24", "c"),
        ("acknowledged=no&role=code_agent", "acd"),
    ],
)
def test_filters(sessions, viewer, query, expected):
    assert listed(viewer, query) == {sessions[k] for k in expected}


def test_newest_first_and_paginated(gateway, viewer):
    ids = [
        open_session(gateway, started_at=f"2026-11-{1 + i // 24:02d}T{i % 24:02d}:00:00Z")
        for i in range(PAGE_SIZE + 2)
    ]
    c = Client()
    c.force_login(viewer)
    first = c.get("/audit/sessions/?role=code_agent")
    assert [str(s.pk) for s in first.context["sessions"]][:2] == [ids[-1], ids[-2]]
    assert len(first.context["sessions"]) == PAGE_SIZE
    assert "role=code_agent&amp;page=2" in first.content.decode()
    second = c.get("/audit/sessions/?role=code_agent&page=2")
    assert [str(s.pk) for s in second.context["sessions"]] == [ids[1], ids[0]]


def api_listed(user, query: str = "") -> set[str]:
    api = APIClient()
    api.force_authenticate(user)
    response = api.get(f"/api/v1/sessions/?{query}")
    assert response.status_code == 200, response.content
    return {s["id"] for s in response.json()["results"]}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "abcd"),
        ("team=acme", "abcd"),
        ("team=globex", ""),
        ("role=database_agent", "b"),
        ("environment=staging", "d"),
        ("server=github_api", "ac"),
        ("status=blocked", "b"),
        ("state=halted", "b"),
        ("trigger=rate_limit", "b"),
        ("date_from=2026-11-22&date_to=2026-11-23", "bd"),
        ("acknowledged=no&role=code_agent", "acd"),
    ],
)
def test_the_api_filters_as_the_page_does(sessions, viewer, query, expected):
    assert api_listed(viewer, query) == {sessions[k] for k in expected}
    if not query.startswith("team="):  # (the page lists the current team; the API, every team of the person)
        assert listed(viewer, query) == api_listed(viewer, query)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("date_from=2026-02-30", "date_from"),
        ("date_to=26-11-2026", "date_to"),
        ("date_to=9999-12-31", "date_to"),
        ("state=sleeping", "state"),
        ("status=maybe", "status"),
        ("trigger=nope", "trigger"),
        ("acknowledged=perhaps", "acknowledged"),
    ],
)
def test_a_bad_api_filter_value_is_a_400_naming_the_parameter(sessions, viewer, query, field):
    api = APIClient()
    api.force_authenticate(viewer)
    response = api.get(f"/api/v1/sessions/?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and body["detail"].startswith(f"{field}: ")
    assert list(body["errors"]) == [field]


def test_events_after_seq_filters_and_refuses_what_is_not_a_whole_number(sessions, viewer):
    api = APIClient()
    api.force_authenticate(viewer)
    url = f"/api/v1/sessions/{sessions['a']}/events/"
    assert [e["seq"] for e in api.get(f"{url}?after_seq=1").json()["results"]] == [2]
    for bad in ("x", "-1", "1.5", "9" * 20):
        response = api.get(f"{url}?after_seq={bad}")
        assert response.status_code == 400 and response.json()["detail"].startswith("after_seq: ")
