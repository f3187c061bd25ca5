"""Audit test helpers: an enforcement client with its token, sessions, and event batches."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from governance.models import AgentRole
from governance.services.clients import client_create
from portal.choices import TeamRole
from tests.factories import make_member

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def event(
    seq: int,
    *,
    call: int | None = None,
    phase: str | None = None,
    status: str | None = "success",
    server: str = "github_api",
    tool: str = "create_pr",
    **extra,
) -> dict:
    """Event `seq`: odd seqs are INTENTs, even seqs the RESULT of the same call (call = (seq+1)//2)."""
    call = call if call is not None else (seq + 1) // 2
    phase = phase or ("intent" if seq % 2 else "result")
    data = {
        "seq": seq,
        "call_id": f"call-{call}",
        "phase": phase,
        "ts": (T0 + timedelta(milliseconds=seq)).isoformat().replace("+00:00", "Z"),
        "server": server,
        "tool": tool,
        "arguments": {"title": f"PR {call}", "base": "main", "n": call, "weight": 0.5},
        "args_summary": f"title=PR {call}, base=main",
        "status": None,
        "result_summary": "",
        "bytes": None,
        "duration_ms": None,
        "trigger": None,
        "bundle_version": 3,
        "result": None,
    }
    if phase == "result":
        data.update(
            status=status,
            result_summary=f"PR#{call} created",
            bytes=120,
            duration_ms=34.5,
            result={"number": call, "url": f"https://example.test/pr/{call}"},
        )
    data.update(extra)
    return data


def events(first: int, last: int, **extra) -> list[dict]:
    return [event(seq, **extra) for seq in range(first, last + 1)]


@pytest.fixture
def environment(team):
    return team.environments.get(name="development")


# A recent start: the portal refuses a started_at far in the past or ahead (docs/enforcer-api.md).
STARTED_AT = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
STARTED_AT_TEXT = STARTED_AT.isoformat().replace("+00:00", "Z")
TEST_ROLES = ("code_agent", "database_agent")


def issue_client(team, environment, name: str):
    """A client allowed to enforce the test roles (created in the team if missing)."""
    for role in TEST_ROLES:
        AgentRole.objects.get_or_create(team=team, name=role)
    return client_create(team=team, environment=environment, name=name)


@pytest.fixture
def issued(team, environment):
    return issue_client(team, environment, "gw-dev")


@pytest.fixture
def gateway(issued):
    """An APIClient speaking as the enforcement client (bearer token)."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.token}")
    api.enforcement_client = issued.client
    return api


@pytest.fixture
def other_gateway(other_team):
    issued = issue_client(other_team, other_team.environments.get(name="development"), "gw")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.token}")
    api.enforcement_client = issued.client
    return api


def open_session(gateway, **fields) -> str:
    sid = str(fields.pop("id", uuid.uuid4()))
    body = {
        "id": sid,
        "role": "code_agent",
        "read_only": True,
        "declared_large_data": False,
        "agent": "test",
        "started_at": STARTED_AT_TEXT,
        "bundle_version": 3,
        **fields,
    }
    response = gateway.post("/api/v1/gateway/sessions/", body, format="json")
    assert response.status_code == 201, response.content
    return sid


def post_events(gateway, sid: str, batch: list[dict]):
    return gateway.post(f"/api/v1/gateway/sessions/{sid}/events/", {"events": batch}, format="json")


@pytest.fixture
def auditor(team):
    return make_member(team, TeamRole.REVIEWER, username="acme-auditor", is_auditor=True)


def person(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api
