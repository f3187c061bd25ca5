"""A long session stays readable: calls paginated, refused repeats folded, a state timeline on
top, filters inside the session, one time format (UTC in <time>, shown locally by the browser)."""

from __future__ import annotations

import re

from tests.audit.conftest import event, open_session, post_events
from tests.factories import UserFactory


def calls(first_call: int, last_call: int, **extra) -> list[dict]:
    out = []
    for n in range(first_call, last_call + 1):
        out += [event(2 * n - 1, **extra), event(2 * n, **extra)]
    return out


def test_a_long_session_is_paginated_with_repeats_folded_and_a_timeline(client, gateway, reviewer):
    sid = open_session(gateway)
    batch = calls(1, 60)  # 60 successful calls …
    batch += calls(
        61, 100, status="blocked", server="shell_execution", tool="run", trigger="unauthorized_server"
    )
    batch += calls(101, 102, server="time", tool="now")  # … 40 identical refusals, then 2 calls
    assert post_events(gateway, sid, batch).status_code in (200, 201)
    r = gateway.patch(
        f"/api/v1/gateway/sessions/{sid}/",
        {"state": "halted", "trigger": "unauthorized_server", "reason": "shell"},
        format="json",
    )
    assert r.status_code == 200
    client.force_login(reviewer)
    first = client.get(f"/audit/sessions/{sid}/").content.decode()
    rows = re.findall(r'<tr id="call-(call-\d+)"', first)
    assert rows == [f"call-{n}" for n in range(1, 51)]  # page 1: 50 rows
    assert "Page 1 of 2" in first and "63 rows" in first  # 60 + one folded row for 40 refusals + 2
    # The timeline on top: opened → halted (trigger), before the session's details.
    timeline = first[first.index('class="state-timeline"') : first.index('class="session-meta"')]
    assert "opened" in timeline and "halted" in timeline and "Unauthorized server" in timeline
    # One time format: a <time> with the UTC instant, "UTC" on hover.
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ" title="[^"]+ UTC"', first)
    second = client.get(f"/audit/sessions/{sid}/", {"page": 2}).content.decode()
    assert re.findall(r'<tr id="call-(call-\d+)"', second) == [f"call-{n}" for n in range(51, 62)] + [
        "call-101",
        "call-102",
    ]
    assert "+ 39 more refused calls of shell_execution.run (unauthorized_server)" in second
    assert 'id="call-call-100"' in second  # the folded calls keep their anchors


def test_filters_inside_a_session(client, gateway, reviewer):
    sid = open_session(gateway)
    batch = calls(1, 3) + calls(4, 5, status="fail", server="time", tool="now")
    assert post_events(gateway, sid, batch).status_code in (200, 201)
    client.force_login(reviewer)
    html = client.get(f"/audit/sessions/{sid}/", {"status": "fail"}).content.decode()
    assert re.findall(r'<tr id="call-(call-\d+)"', html) == ["call-4", "call-5"]
    assert "2 rows matching, of 5 calls" in html
    html = client.get(
        f"/audit/sessions/{sid}/", {"server": "github_api", "tool": "create_pr"}
    ).content.decode()
    assert re.findall(r'<tr id="call-(call-\d+)"', html) == ["call-1", "call-2", "call-3"]
    html = client.get(f"/audit/sessions/{sid}/", {"tool": "<script>"}).content.decode()
    assert "No call matches these filters." in html and "<script>" not in html


def test_another_team_never_sees_the_session(client, gateway, outsider):
    sid = open_session(gateway)
    client.force_login(outsider)
    assert client.get(f"/audit/sessions/{sid}/", {"page": 2, "status": "fail"}).status_code == 404
    client.force_login(UserFactory(username="loner"))
    assert client.get(f"/audit/sessions/{sid}/").status_code == 404
