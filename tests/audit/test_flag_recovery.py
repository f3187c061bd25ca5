"""Recovering from a kill switch: re-enabling a flag (or resolving an incident) resumes the sessions it halted."""

from __future__ import annotations

import pytest
from django.test import Client

from audit.models import AgentSession, SessionStateChange
from audit.services import session_release
from governance.models import Flag
from governance.services.flags import flag_create, flag_disable
from governance.services.servers import server_create
from incidents.services import incident_contain, incident_open, incident_record_root_cause, incident_resolve
from mcpgov import bundle as mcpgov_bundle
from mcpgov.decision import kill_switch_line
from portal.errors import Conflict
from tests.audit.conftest import open_session, person

pytestmark = pytest.mark.django_db


@pytest.fixture
def fs(team):
    return server_create(team=team, slug="filesystem", category="filesystem")


@pytest.fixture
def write_flag(team, fs):
    return flag_create(team=team, server=fs, capability="write")


def halt_by_flag(gateway, flag: Flag, reason="suspected misuse") -> str:
    """A session halted as the gateway reports a kill-switch halt (its reason line is the gateway's own)."""
    sid = open_session(gateway)
    line = kill_switch_line(mcpgov_bundle.Flag(name=flag.name, enabled=False, reason=reason))
    response = gateway.patch(
        f"/api/v1/gateway/sessions/{sid}/",
        {"state": "halted", "trigger": "kill_switch_flag", "reason": line},
        format="json",
    )
    assert response.status_code == 200, response.content
    return sid


def web(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_flag_reenable_resumes_the_sessions_it_halted(gateway, reviewer, team, fs, write_flag, environment):
    flag_disable(flag=write_flag, environment=environment, reason="suspected misuse", actor=reviewer)
    read_flag = flag_create(team=team, server=fs, capability="read", actor=None)
    halted = [halt_by_flag(gateway, write_flag), halt_by_flag(gateway, write_flag)]
    by_other_flag = halt_by_flag(gateway, read_flag)
    assert SessionStateChange.objects.get(session_id=halted[0], to_state="halted").flag == write_flag.name

    panel = web(reviewer).get("/governance/flags/").content.decode()
    assert "let the 2 sessions it halted continue" in panel

    response = web(reviewer).post(
        f"/governance/flags/{write_flag.pk}/{environment.pk}/enable/",
        {"reason": "false alarm", "resume": "on"},
    )
    assert response.status_code == 302
    for sid in halted:
        session = AgentSession.objects.get(pk=sid)
        assert session.state == "active" and session.control_version == 1
        decision = session.decisions.get()
        assert decision.kind == "release" and decision.decided_by == reviewer
        assert decision.reason == f"Flag {write_flag.name} re-enabled in development: false alarm"
        assert SessionStateChange.objects.filter(session_id=sid, source="person", actor=reviewer).count() == 1
    assert AgentSession.objects.get(pk=by_other_flag).state == "halted"


def test_flag_reenable_without_resume_leaves_them_halted(gateway, reviewer, write_flag, environment):
    flag_disable(flag=write_flag, environment=environment, reason="r", actor=reviewer)
    sid = halt_by_flag(gateway, write_flag)
    web(reviewer).post(f"/governance/flags/{write_flag.pk}/{environment.pk}/enable/", {"reason": ""})
    assert AgentSession.objects.get(pk=sid).state == "halted"


def test_releasing_while_the_flag_is_off_needs_confirmation(gateway, reviewer, write_flag, environment):
    flag_disable(flag=write_flag, environment=environment, reason="suspected misuse", actor=reviewer)
    sid = halt_by_flag(gateway, write_flag)
    session = AgentSession.objects.get(pk=sid)
    with pytest.raises(Conflict) as refused:
        session_release(session=session, reviewer=reviewer, reason="go on")
    assert refused.value.code == "flag_still_off"
    api = person(reviewer)
    response = api.post(f"/api/v1/sessions/{sid}/release/", {"reason": "go on"}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "flag_still_off"
    assert AgentSession.objects.get(pk=sid).state == "halted"
    page = web(reviewer).get(f"/audit/sessions/{sid}/").content.decode()
    assert f"Flag {write_flag.name} is still off in development" in page and "data-flag-off=" in page
    response = api.post(
        f"/api/v1/sessions/{sid}/release/", {"reason": "go on", "confirm_flag_off": True}, format="json"
    )
    assert response.status_code == 200 and response.json()["session"]["state"] == "active"


def test_incident_resolve_resumes_the_sessions_its_flags_halted(gateway, reviewer, team, fs, write_flag):
    incident = incident_open(team=team, title="Writes to prod", severity="sev2", servers=[fs], actor=reviewer)
    incident_contain(incident=incident, actor=reviewer)
    sid = halt_by_flag(gateway, write_flag, reason=f"Incident #{incident.pk}: Writes to prod")
    detail = web(reviewer).get(f"/incidents/{incident.pk}/").content.decode()
    assert "Let the 1 session(s) these flags halted continue" in detail
    incident_record_root_cause(incident=incident, root_cause="typo in a role", actor=reviewer)
    states = [s for s in incident.timeline.get(kind="contained").detail["disabled"]]
    incident_resolve(
        incident=incident, actor=reviewer, reenable=[s["state"] for s in states], resume_sessions=True
    )
    session = AgentSession.objects.get(pk=sid)
    assert session.state == "active"
    assert (
        session.decisions.get().reason
        == f"Flag {write_flag.name} re-enabled in development: incident #{incident.pk} resolved"
    )
    entry = incident.timeline.get(kind="flags_reenabled")
    assert (
        entry.detail["sessions_resumed"] == [sid] and "1 halted session(s) allowed to continue" in entry.text
    )
