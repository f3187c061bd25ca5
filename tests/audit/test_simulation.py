"""Simulating a draft over recorded calls (posted through the gateways' ingestion API): the exact calls
the draft would refuse, by trigger, the calls it would allow, and the sessions that would halt."""

from __future__ import annotations

from datetime import timedelta

import pytest

from audit.services.simulation import draft_simulate
from governance.choices import RuleKind
from governance.models import AgentRole, ServerBinding
from governance.services import drafts
from governance.services import environments as env_services
from governance.services import roles as role_services
from governance.services import servers as server_services
from governance.services.bundles import team_bundles_rebuild
from governance.services.teams import team_policy_settings_set
from tests.audit.conftest import T0, event, open_session, post_events


@pytest.fixture
def recorded(team, environment, gateway):
    git = server_services.server_create(team=team, slug="git", command="python")
    server_services.server_tools_record(
        server=git,
        tools=[
            {"name": "log", "annotations": {"readOnlyHint": True}},
            {"name": "write_file", "annotations": {"readOnlyHint": False}},
        ],
    )
    env_services.binding_set(environment=environment, server=git, target="/srv", permission="read_write")
    role = AgentRole.objects.get(team=team, name="code_agent")
    role_services.role_server_add(role=role, server=git, kind=RuleKind.ALLOWED)
    team_bundles_rebuild(team_id=team.pk)
    team_policy_settings_set(team=team, policy_edits_immediate=False)
    # a writing session: log, write_file, write_file (same file), log
    writer = open_session(gateway, read_only=False)
    calls = ["log", "write_file", "write_file", "log"]
    batch = []
    for n, tool in enumerate(calls, 1):
        args = {"path": "/srv/a.txt"}
        batch.append(event(2 * n - 1, call=n, server="git", tool=tool, arguments=args))
        batch.append(event(2 * n, call=n, server="git", tool=tool, arguments=args))
    assert post_events(gateway, writer, batch).status_code in (200, 201)
    # a reading session: only logs
    reader = open_session(gateway, read_only=True)
    batch = [event(s, call=(s + 1) // 2, server="git", tool="log", arguments={}) for s in range(1, 5)]
    assert post_events(gateway, reader, batch).status_code in (200, 201)
    return {"git": git, "role": role, "writer": writer, "reader": reader}


def test_simulation_shows_the_exact_calls_a_draft_would_refuse(team, admin, environment, recorded):
    binding = ServerBinding.objects.get(environment=environment, server=recorded["git"])
    with pytest.raises(drafts.DraftChangeRecorded):
        env_services.binding_set(
            environment=environment, server=recorded["git"], permission="read_only", actor=admin
        )
    assert ServerBinding.objects.get(pk=binding.pk).permission == "read_write"
    report = draft_simulate(
        draft=drafts.draft_open(team=team), since=T0 - timedelta(hours=1), until=T0 + timedelta(hours=1)
    )
    dev = next(e for e in report.environments if e.environment == "development")
    assert (dev.calls, dev.sessions) == (6, 2)
    refused = [(c.session_id, c.seq, c.tool, c.live, c.draft) for c in dev.newly_refused]
    writer = recorded["writer"]
    assert refused == [
        (writer, 3, "write_file", "allow", "refuse (write_in_read_session)"),
        (writer, 5, "write_file", "allow", "refuse (session_halted)"),
        (writer, 7, "log", "allow", "refuse (session_halted)"),
    ]
    assert dev.refused_by_trigger == {"session_halted": 2, "write_in_read_session": 1}
    assert dev.halted_sessions == [writer]
    assert dev.newly_allowed == []
    # the other environments recorded nothing in the window
    assert all(e.calls == 0 for e in report.environments if e.environment != "development")


def test_simulation_shows_calls_a_draft_would_allow(team, admin, environment, recorded):
    # the role loses git: the draft refuses everything; a draft that then gives it back allows all again
    rule = recorded["role"].rules.get(server=recorded["git"])
    with pytest.raises(drafts.DraftChangeRecorded):
        role_services.role_server_remove(rule=rule, actor=admin)
    window = {"since": T0 - timedelta(hours=1), "until": T0 + timedelta(hours=1)}
    dev = next(
        e
        for e in draft_simulate(draft=drafts.draft_open(team=team), **window).environments
        if e.environment == "development"
    )
    assert dev.newly_refused_count == 6
    assert dev.refused_by_trigger["unauthorized_server"] == 2  # the first call of each session
    assert sorted(dev.halted_sessions) == sorted([recorded["writer"], recorded["reader"]])
    # outside the window, nothing is replayed
    empty = draft_simulate(
        draft=drafts.draft_open(team=team), since=T0 + timedelta(hours=2), until=T0 + timedelta(hours=3)
    )
    assert empty.calls == 0


def test_simulation_page_needs_change_policy(team, admin, viewer, outsider, environment, recorded, client):
    with pytest.raises(drafts.DraftChangeRecorded):
        env_services.binding_set(
            environment=environment, server=recorded["git"], permission="read_only", actor=admin
        )
    client.force_login(viewer)
    assert client.get("/audit/simulation/").status_code == 403
    client.force_login(outsider)
    assert "write_file" not in client.get("/audit/simulation/").content.decode()
    client.force_login(admin)
    page = client.get("/audit/simulation/?days=30")
    assert page.status_code == 200
    assert 'data-environment="development"' in page.content.decode()


def test_simulation_api_names_the_calls_and_follows_the_page_rules(
    team, admin, viewer, reviewer, outsider, environment, recorded
):
    from rest_framework.test import APIClient

    from tests.audit.conftest import person

    with pytest.raises(drafts.DraftChangeRecorded):
        env_services.binding_set(
            environment=environment, server=recorded["git"], permission="read_only", actor=admin
        )
    draft = drafts.draft_open(team=team)
    url = f"/api/v1/policy-drafts/{draft.pk}/simulation/"
    window = {
        "since": (T0 - timedelta(hours=1)).isoformat(),
        "until": (T0 + timedelta(hours=1)).isoformat(),
        "environment": "development",
    }
    assert APIClient().get(url, window).status_code == 403
    for user in (viewer, reviewer):  # they may read the draft, not replay every session
        assert person(user).get(url, window).status_code == 403
    assert person(outsider).get(url, window).status_code == 404
    response = person(admin).get(url, window)
    assert response.status_code == 200, response.content
    body = response.json()
    assert [e["environment"] for e in body["environments"]] == ["development"]
    dev = body["environments"][0]
    writer = recorded["writer"]
    assert [(c["session_id"], c["seq"], c["tool"], c["draft"]) for c in dev["newly_refused"]] == [
        (writer, 3, "write_file", "refuse (write_in_read_session)"),
        (writer, 5, "write_file", "refuse (session_halted)"),
        (writer, 7, "log", "refuse (session_halted)"),
    ]
    assert dev["newly_refused"][0]["session_url"] == f"/audit/sessions/{writer}/"
    assert (dev["calls"], dev["halted_sessions"]) == (6, [writer])
    # bad windows and names are a 400 that says what is wrong
    for bad, field in (
        ({"days": "0"}, "days"),
        ({"days": "7", "since": window["since"]}, "non_field_errors"),
        ({"since": window["until"], "until": window["since"]}, "since"),
        ({"days": "400"}, "days"),
        ({"environment": "moon"}, "environment"),
    ):
        answer = person(admin).get(url, bad)
        assert answer.status_code == 400 and field in answer.json()["errors"], (bad, answer.content)
    drafts.draft_discard(draft=draft, actor=admin)
    closed = person(admin).get(url)
    assert closed.status_code == 400 and "discarded" in closed.json()["detail"]
