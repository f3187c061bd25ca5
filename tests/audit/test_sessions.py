"""Sessions through the gateway API and people's decisions: open, report, release, end, approve."""

from __future__ import annotations

import uuid

import pytest

from audit.models import AgentSession, SessionDecision
from portal.models import ChangeRecord
from tests.audit.conftest import STARTED_AT_TEXT, event, open_session, person, post_events

pytestmark = pytest.mark.django_db


def halt(gateway, sid, state="halted", trigger="cascade_write_chain"):
    last = [
        {
            "ts": "2026-11-24T09:00:01Z",
            "server": "fs",
            "tool": "write_file",
            "args": f"path=/tmp/{i}",
            "outcome": "success",
        }
        for i in range(3)
    ]
    response = gateway.patch(
        f"/api/v1/gateway/sessions/{sid}/",
        {"state": state, "trigger": trigger, "reason": "3 writes in a row", "last_calls": last},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def test_open_is_idempotent_and_returns_the_resource(gateway, issued):
    sid = str(uuid.uuid4())
    body = {
        "id": sid,
        "role": "code_agent",
        "read_only": False,
        "declared_large_data": True,
        "agent": "claude",
        "started_at": STARTED_AT_TEXT,
        "bundle_version": 12,
    }
    first = gateway.post("/api/v1/gateway/sessions/", body, format="json")
    assert first.status_code == 201
    resource = first.json()
    assert resource == {
        "id": sid,
        "team": "acme",
        "environment": "development",
        "role": "code_agent",
        "read_only": False,
        "declared_large_data": True,
        "agent": "claude",
        "agent_id": None,
        "agent_auth": "",
        "run_id": "",
        "state": "active",
        "trigger": None,
        "state_reason": "",
        "control_version": 0,
        "started_at": STARTED_AT_TEXT,
        "ended_at": None,
        "calls": {"total": 0, "blocked": 0, "failed": 0},
    }
    again = gateway.post("/api/v1/gateway/sessions/", {**body, "role": "other"}, format="json")
    assert again.status_code == 200 and again.json() == resource
    assert AgentSession.objects.get(pk=sid).client == issued.client


def test_another_teams_session_id_is_not_reusable(gateway, other_gateway):
    sid = open_session(gateway)
    response = other_gateway.post("/api/v1/gateway/sessions/", {"id": sid, "role": "x"}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "session_conflict"
    assert other_gateway.get(f"/api/v1/gateway/sessions/{sid}/").status_code == 404
    assert (
        other_gateway.patch(f"/api/v1/gateway/sessions/{sid}/", {"state": "ended"}, format="json").status_code
        == 404
    )
    assert AgentSession.objects.get(pk=sid).state == "active"


def test_invalid_open_names_the_field(gateway):
    response = gateway.post("/api/v1/gateway/sessions/", {"id": "nope", "role": ""}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert set(response.json()["errors"]) == {"id", "role"}


def test_gateway_cannot_release_itself(gateway):
    sid = open_session(gateway)
    assert halt(gateway, sid)["state"] == "halted"
    response = gateway.patch(f"/api/v1/gateway/sessions/{sid}/", {"state": "active"}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "needs_release"
    session = AgentSession.objects.get(pk=sid)
    assert (
        session.state == "halted"
        and session.trigger == "cascade_write_chain"
        and len(session.last_calls) == 3
    )
    paused = open_session(gateway)
    halt(gateway, paused, state="paused", trigger="rate_limit")
    assert (
        gateway.patch(f"/api/v1/gateway/sessions/{paused}/", {"state": "active"}, format="json").status_code
        == 409
    )
    ended = gateway.patch(
        f"/api/v1/gateway/sessions/{sid}/", {"state": "ended", "reason": "agent quit"}, format="json"
    )
    assert ended.status_code == 200 and ended.json()["ended_at"]
    after = gateway.patch(f"/api/v1/gateway/sessions/{sid}/", {"state": "halted"}, format="json")
    assert after.status_code == 409 and after.json()["code"] == "session_ended"


def test_release_bumps_control_and_is_recorded(gateway, reviewer):
    sid = open_session(gateway)
    halt(gateway, sid)
    control = gateway.get(f"/api/v1/gateway/sessions/{sid}/control/?since=0&wait=0").json()
    assert control["state"] == "halted" and control["control_version"] == 0 and control["decided_by"] is None
    api = person(reviewer)
    assert api.post(f"/api/v1/sessions/{sid}/release/", {"reason": ""}, format="json").status_code == 400
    response = api.post(f"/api/v1/sessions/{sid}/release/", {"reason": "writes were intended"}, format="json")
    assert response.status_code == 200
    assert (
        response.json()["session"]["state"] == "active" and response.json()["decision"]["kind"] == "release"
    )
    control = gateway.get(f"/api/v1/gateway/sessions/{sid}/control/?since=0&wait=5").json()
    assert control["state"] == "active" and control["control_version"] == 1
    assert control["decided_by"] == reviewer.username and control["reason"] == "writes were intended"
    assert control["decided_at"].endswith("Z") and control["approvals"] == []
    change = ChangeRecord.objects.filter(team__slug="acme", object_id=sid).first()
    assert change.actor == reviewer and "writes were intended" in change.summary
    again = api.post(f"/api/v1/sessions/{sid}/release/", {"reason": "twice"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "not_waiting"


def test_end_by_a_reviewer(gateway, reviewer):
    sid = open_session(gateway)
    halt(gateway, sid)
    response = person(reviewer).post(
        f"/api/v1/sessions/{sid}/end/", {"reason": "not intended"}, format="json"
    )
    assert response.status_code == 200 and response.json()["session"]["state"] == "ended"
    control = gateway.get(f"/api/v1/gateway/sessions/{sid}/control/?since=0").json()
    assert control["state"] == "ended" and control["control_version"] == 1


def test_per_call_approvals_use_the_control_channel(gateway, reviewer):
    sid = open_session(gateway)
    post_events(
        gateway,
        sid,
        [
            event(1, trigger="approval_required", tool="drop_table"),
            event(2, call=2, phase="intent", trigger="approval_required"),
        ],
    )
    api = person(reviewer)
    assert [p["call_id"] for p in api.get(f"/api/v1/sessions/{sid}/approvals/").json()["pending"]] == [
        "call-1",
        "call-2",
    ]
    unknown = api.post(
        f"/api/v1/sessions/{sid}/approvals/",
        {"call_id": "call-9", "decision": "approve", "reason": "ok"},
        format="json",
    )
    assert unknown.status_code == 409 and unknown.json()["code"] == "no_pending_approval"
    assert (
        api.post(
            f"/api/v1/sessions/{sid}/approvals/",
            {"call_id": "call-1", "decision": "deny", "reason": "never in prod"},
            format="json",
        ).status_code
        == 201
    )
    assert (
        api.post(
            f"/api/v1/sessions/{sid}/approvals/",
            {"call_id": "call-2", "decision": "approve", "reason": "fine"},
            format="json",
        ).status_code
        == 201
    )
    control = gateway.get(f"/api/v1/gateway/sessions/{sid}/control/?since=0").json()
    assert control["control_version"] == 2 and control["state"] == "active"
    assert [(a["call_id"], a["decision"], a["by"]) for a in control["approvals"]] == [
        ("call-1", "deny", reviewer.username),
        ("call-2", "approve", reviewer.username),
    ]
    assert [
        a["call_id"]
        for a in gateway.get(f"/api/v1/gateway/sessions/{sid}/control/?since=1").json()["approvals"]
    ] == ["call-2"]
    assert AgentSession.objects.get(pk=sid).pending_approvals == []
    assert SessionDecision.objects.filter(session_id=sid).count() == 2


def test_control_poll_validation_and_auth(gateway, other_gateway, reviewer, client):
    sid = open_session(gateway)
    assert gateway.get(f"/api/v1/gateway/sessions/{sid}/control/?wait=31").status_code == 400
    assert gateway.get(f"/api/v1/gateway/sessions/{sid}/control/?since=x").status_code == 400
    assert other_gateway.get(f"/api/v1/gateway/sessions/{sid}/control/").status_code == 404
    assert client.get(f"/api/v1/gateway/sessions/{sid}/control/").status_code == 401
    client.force_login(reviewer)
    assert client.get(f"/api/v1/gateway/sessions/{sid}/control/").status_code == 401
    bad = client.get(f"/api/v1/gateway/sessions/{sid}/control/", HTTP_AUTHORIZATION="Bearer mcpgov_x_y")
    assert bad.status_code == 401 and bad.json()["code"] == "token_invalid"


def test_control_poll_times_out_without_a_decision(gateway):
    import time

    sid = open_session(gateway)
    started = time.monotonic()
    body = gateway.get(f"/api/v1/gateway/sessions/{sid}/control/?since=0&wait=0.5").json()
    assert time.monotonic() - started >= 0.45  # held for the wait, then answered with the state
    assert body["control_version"] == 0 and body["state"] == "active"


def test_a_state_report_with_nul_in_last_calls_is_400_and_changes_nothing(gateway):
    # Found by schemathesis: PostgreSQL cannot store NUL in jsonb (it was a 500).
    sid = open_session(gateway)
    calls = [{"tool": "read_file", "args": {"path": "a\x00b"}, "outcome": "ok"}]
    response = gateway.patch(
        f"/api/v1/gateway/sessions/{sid}/",
        {"state": "halted", "trigger": "kill_switch_flag", "last_calls": calls},
        format="json",
    )
    assert response.status_code == 400 and "last_calls" in response.content.decode()
    assert AgentSession.objects.get(pk=sid).state == "active"
