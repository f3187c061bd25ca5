"""Who, where, as what (docs/enforcer-api.md, "Agent identity"): the portal refuses a session whose role
the credentials do not carry, whoami, delivery by a revoked client, and the reviewers' pages showing the
agent, the enforcement client, the role and the run id."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from audit.models import AgentSession, AuditEvent
from governance.models import AgentRole
from governance.services.agents import agent_create, agent_revoke
from governance.services.clients import client_create, client_revoke
from tests.audit.conftest import STARTED_AT_TEXT, events, open_session, post_events

pytestmark = pytest.mark.django_db


def rfc3339(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def refused(gateway, **fields):
    body = {"id": str(uuid.uuid4()), "role": "code_agent", "agent": "test", "started_at": STARTED_AT_TEXT}
    body.update(fields)
    response = gateway.post("/api/v1/gateway/sessions/", body, format="json")
    assert response.status_code == 400, response.content
    assert not AgentSession.objects.filter(pk=body["id"]).exists()
    return response.json()


@pytest.fixture
def coder(team, environment, issued):
    """An agent of the team allowed code_agent in development (the `gateway` fixture's environment)."""
    return agent_create(
        team=team,
        name="coder",
        slug="coder",
        roles=[AgentRole.objects.get(team=team, name="code_agent")],
        environments=[environment],
    ).agent


def as_agent(agent, auth="oauth"):
    return {"id": str(agent.pk), "slug": agent.slug, "auth": auth}


def test_a_role_the_team_does_not_have_is_refused(gateway):
    body = refused(gateway, role="root_agent")
    assert body["code"] == "unknown_role" and "root_agent" in str(body)


def test_a_role_the_client_may_not_enforce_is_refused(gateway, team):
    AgentRole.objects.create(team=team, name="deploy_agent")  # exists, but the client was not given it
    body = refused(gateway, role="deploy_agent")
    assert body["code"] == "role_not_allowed"


def test_a_role_the_agent_may_not_use_is_refused(gateway, coder):
    body = refused(gateway, role="database_agent", agent=as_agent(coder))  # the client may, the agent not
    assert body["code"] == "role_not_allowed" and "coder" in str(body)


def test_an_agent_not_allowed_in_the_clients_environment_is_refused(gateway, team, coder):
    coder.environments.set([team.environments.get(name="staging")])
    assert refused(gateway, agent=as_agent(coder))["code"] == "role_not_allowed"


def test_an_agent_of_another_team_or_a_revoked_one_is_refused(gateway, other_team, coder):
    theirs = agent_create(
        team=other_team,
        name="x",
        slug="x",
        roles=[AgentRole.objects.create(team=other_team, name="code_agent")],
        environments=[other_team.environments.get(name="development")],
    ).agent
    assert refused(gateway, agent=as_agent(theirs))["code"] == "unknown_agent"
    assert (
        refused(gateway, agent={"id": "not-a-number", "slug": "x", "auth": "api_key"})["code"]
        == "unknown_agent"
    )
    assert "needs its id" in str(refused(gateway, agent={"slug": "coder", "auth": "oauth"}))
    agent_revoke(agent=coder)
    assert refused(gateway, agent=as_agent(coder))["code"] == "unknown_agent"


@pytest.mark.parametrize(
    "started_at",
    [
        "1922-03-01T00:00:00Z",
        rfc3339(datetime.now(UTC) - timedelta(days=400)),
        rfc3339(datetime.now(UTC) + timedelta(hours=1)),
    ],
    ids=["1922", "over-a-year-ago", "an-hour-ahead"],
)
def test_a_started_at_far_in_the_past_or_ahead_is_refused(gateway, started_at):
    assert refused(gateway, started_at=started_at)["field"] == "started_at"


def test_a_session_with_valid_credentials_records_who_where_and_as_what(gateway, coder, issued):
    sid = open_session(gateway, agent=as_agent(coder), run_id="trace:4bf92f3577b34da6a3ce929d0e0e4736")
    session = AgentSession.objects.get(pk=sid)
    assert (session.registered_agent_id, session.agent, session.agent_auth) == (coder.pk, "coder", "oauth")
    assert (session.client_id, session.role, session.run_id) == (
        issued.client.pk,
        "code_agent",
        "trace:4bf92f3577b34da6a3ce929d0e0e4736",
    )


def test_a_gate_refusal_is_recorded_whatever_the_role_but_not_for_a_foreign_agent(gateway, other_team):
    sid = str(uuid.uuid4())
    body = {
        "id": sid,
        "role": "root_agent",
        "agent": "ana",
        "started_at": STARTED_AT_TEXT,
        "state": "refused",
        "trigger": "unauthorized_server",
        "gate_report": {"violations": [{"server": "shell"}]},
    }
    assert gateway.post("/api/v1/gateway/sessions/", body, format="json").status_code == 201
    session = AgentSession.objects.get(pk=sid)
    assert session.state == "refused" and session.gate_report["violations"] == [{"server": "shell"}]
    assert refused(gateway, state="refused", agent={"id": "999999", "slug": "x", "auth": "oauth"})


# --- whoami ---------------------------------------------------------------------------------------------


def test_whoami_names_the_client_its_team_environment_and_roles(gateway, issued):
    body = gateway.get("/api/v1/client/").json()
    assert body["client"]["id"] == issued.client.pk and body["client"]["name"] == "gw-dev"
    assert (body["team"], body["environment"], body["revoked"]) == ("acme", "development", False)
    assert body["roles"] == ["code_agent", "database_agent"]


def test_whoami_refuses_no_token_a_wrong_one_a_person_and_a_revoked_client(gateway, issued, admin):
    assert APIClient().get("/api/v1/client/").status_code == 401
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Bearer " + issued.token[:-2] + "xx")
    assert wrong.get("/api/v1/client/").json()["code"] == "token_invalid"
    person = APIClient()
    person.force_authenticate(admin)
    assert person.get("/api/v1/client/").status_code in (401, 403)
    client_revoke(client=issued.client)
    response = gateway.get("/api/v1/client/")
    assert response.status_code == 401 and response.json()["code"] == "token_revoked"


# --- a revoked client delivers what it recorded, nothing else ----------------------------------------


def test_a_revoked_client_delivers_events_of_sessions_opened_before_and_nothing_new(gateway, issued):
    before = open_session(gateway)
    assert post_events(gateway, before, events(1, 2)).status_code in (200, 201)
    client_revoke(client=issued.client)
    # Recorded before the revocation: still delivered, and the end is reported.
    response = post_events(gateway, before, events(3, 4))
    assert response.status_code in (200, 201), response.content
    assert AuditEvent.objects.filter(session_id=before).count() == 4
    assert (
        gateway.patch(f"/api/v1/gateway/sessions/{before}/", {"state": "ended"}, format="json").status_code
        == 200
    )
    # Nothing else: a new session, a state other than ended, reading the session, the bundle.
    sid = str(uuid.uuid4())
    body = {"id": sid, "role": "code_agent", "started_at": STARTED_AT_TEXT}
    assert gateway.post("/api/v1/gateway/sessions/", body, format="json").json()["code"] == "token_revoked"
    assert not AgentSession.objects.filter(pk=sid).exists()
    assert post_events(gateway, sid, events(1, 2)).status_code == 401
    halted = gateway.patch(f"/api/v1/gateway/sessions/{before}/", {"state": "halted"}, format="json")
    assert halted.status_code == 401
    assert gateway.get(f"/api/v1/gateway/sessions/{before}/").status_code == 401
    assert gateway.get("/api/v1/bundle/").status_code == 401


def test_a_revoked_client_cannot_deliver_into_another_clients_session(gateway, team, environment, issued):
    other = client_create(team=team, environment=environment, name="gw-2")
    other_gw = APIClient()
    other_gw.credentials(HTTP_AUTHORIZATION=f"Bearer {other.token}")
    theirs = open_session(other_gw)
    client_revoke(client=issued.client)
    assert post_events(gateway, theirs, events(1, 2)).status_code == 401
    assert AuditEvent.objects.filter(session_id=theirs).count() == 0


# --- reviewers see who, where, as what ----------------------------------------------------------------


def test_session_list_and_detail_show_agent_client_role_and_run_id(client, gateway, coder, reviewer):
    sid = open_session(gateway, agent=as_agent(coder, "api_key"), run_id="nightly-4711", role="code_agent")
    client.force_login(reviewer)
    listing = client.get(reverse("audit:session-list")).content.decode()
    assert 'class="session-agent">coder' in listing and 'class="session-client">gw-dev' in listing
    assert "run nightly-4711" in listing and "<td>code_agent</td>" in listing
    detail = client.get(reverse("audit:session-detail", args=[sid])).content.decode()
    assert "<code>nightly-4711</code>" in detail and "gw-dev" in detail and "Agent API key" in detail
    assert f'href="{reverse("governance:agent-detail", args=[coder.pk])}"' in detail
