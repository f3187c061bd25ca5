"""Incidents: every transition on the timeline, containment kills flags everywhere, resolve re-enables."""

from __future__ import annotations

import uuid

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError

from governance.models import Flag, FlagState
from governance.services.flags import flag_create, flag_disable
from governance.services.servers import server_create
from incidents.choices import IncidentStatus
from incidents.models import Incident, IncidentEntry
from incidents.services import (
    contained_flag_states,
    incident_add_note,
    incident_contain,
    incident_link_session,
    incident_open,
    incident_record_root_cause,
    incident_resolve,
)
from portal.models import ChangeRecord

Kind = IncidentEntry.Kind


@pytest.fixture
def servers(team):
    fs = server_create(team=team, slug="filesystem", category="filesystem")
    db = server_create(team=team, slug="database", category="database")
    other = server_create(team=team, slug="github_api", category="api")
    flag_create(team=team, server=fs, capability="write")
    flag_create(team=team, server=fs, capability="read")
    flag_create(team=team, server=other, capability="all")
    return {"fs": fs, "db": db, "other": other}


def agent_session(team, env_name="production") -> str:
    from django.utils import timezone

    from audit.models import AgentSession

    session = AgentSession.objects.create(
        id=uuid.uuid4(),
        team=team,
        environment=team.environments.get(name=env_name),
        role="code_agent",
        started_at=timezone.now(),
    )
    return str(session.pk)


def kinds(incident) -> list[str]:
    return list(incident.timeline.order_by("created_at", "id").values_list("kind", flat=True))


def test_full_workflow_every_step_on_the_timeline(
    team, servers, reviewer, admin, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        incident = incident_open(
            team=team,
            title="Agent wrote to prod files",
            severity="sev1",
            servers=[servers["fs"], servers["db"]],
            actor=reviewer,
            description="Noticed at 14:02",
        )
    assert incident.status == IncidentStatus.OPEN
    assert sorted(m.to[0] for m in mail.outbox) == sorted([reviewer.email, admin.email])
    assert "opened" in mail.outbox[0].subject and "Agent wrote to prod files" in mail.outbox[0].subject

    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        entry = incident_contain(incident=incident, actor=reviewer)
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.CONTAINED and incident.contained_at is not None
    # Every flag of filesystem is off in every environment, with the incident title as the reason …
    fs_states = FlagState.objects.filter(flag__server=servers["fs"])
    assert fs_states.count() == 6 and not fs_states.filter(enabled=True).exists()
    assert set(fs_states.values_list("reason", flat=True)) == {
        f"Incident #{incident.pk}: Agent wrote to prod files"
    }
    # … database had no flag: containment created mcp.database.all and switched it off too …
    db_flag = Flag.objects.get(server=servers["db"])
    assert db_flag.name == "mcp.database.all" and not db_flag.states.filter(enabled=True).exists()
    # … and the unaffected server keeps its flags on.
    assert not FlagState.objects.filter(flag__server=servers["other"], enabled=False).exists()
    assert len(entry.detail["disabled"]) == 9 and entry.detail["flags_created"] == ["mcp.database.all"]
    assert "contained" in mail.outbox[0].subject

    session_id = agent_session(team)
    incident_link_session(incident=incident, session_id=session_id, actor=reviewer)
    incident_add_note(incident=incident, text="Audit shows 3 writes to /etc", actor=reviewer)
    incident_record_root_cause(incident=incident, root_cause="Role allowed filesystem writes", actor=reviewer)
    incident.refresh_from_db()
    assert [str(s.pk) for s in incident.sessions.all()] == [
        session_id
    ] and incident.root_cause == "Role allowed filesystem writes"

    candidates = contained_flag_states(incident)
    assert len(candidates) == 9
    write_states = [s for s in candidates if s.flag.name == "mcp.filesystem.write"]
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        incident_resolve(incident=incident, actor=admin, reenable=write_states, note="Role fixed")
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.RESOLVED and incident.resolved_at is not None
    assert all(FlagState.objects.get(pk=s.pk).enabled for s in write_states)
    assert not FlagState.objects.filter(flag__name="mcp.filesystem.read", enabled=True).exists()
    assert "resolved" in mail.outbox[0].subject and "left off" in mail.outbox[0].body

    assert kinds(incident) == [
        Kind.OPENED,
        Kind.CONTAINED,
        Kind.SESSION_LINKED,
        Kind.NOTE,
        Kind.ROOT_CAUSE,
        Kind.RESOLVED,
        Kind.FLAGS_REENABLED,
    ]
    entries = list(incident.timeline.all())
    assert [e.actor for e in entries] == [reviewer] * 5 + [admin] * 2
    assert all(e.created_at is not None for e in entries)
    # Each step is in the team's change history too.
    assert (
        ChangeRecord.objects.filter(team=team, object_type="incident", object_id=str(incident.pk)).count()
        == 7
    )


def test_containment_leaves_flags_already_off_unclaimed(team, servers, admin):
    prod = team.environments.get(name="production")
    flag = Flag.objects.get(name="mcp.filesystem.write")
    flag_disable(flag=flag, environment=prod, reason="earlier freeze", actor=admin)
    incident = incident_open(team=team, title="T", severity="sev2", servers=[servers["fs"]], actor=admin)
    incident_contain(incident=incident, actor=admin)
    claimed = {(s.flag.name, s.environment.name) for s in contained_flag_states(incident)}
    assert ("mcp.filesystem.write", "production") not in claimed
    assert FlagState.objects.get(flag=flag, environment=prod).reason == "earlier freeze"


def test_resolve_needs_a_root_cause_and_only_reenables_its_own_flags(team, servers, admin):
    incident = incident_open(team=team, title="T", severity="sev3", servers=[servers["fs"]], actor=admin)
    incident_contain(incident=incident, actor=admin)
    with pytest.raises(ValidationError, match="root cause"):
        incident_resolve(incident=incident, actor=admin)
    incident_record_root_cause(incident=incident, root_cause="x", actor=admin)
    foreign = FlagState.objects.filter(flag__server=servers["other"]).first()
    with pytest.raises(ValidationError, match="Only flags this incident"):
        incident_resolve(incident=incident, actor=admin, reenable=[foreign])
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.CONTAINED
    incident_resolve(incident=incident, actor=admin)
    with pytest.raises(ValidationError, match="resolved"):
        incident_contain(incident=incident, actor=admin)


def test_containment_needs_affected_servers(team, admin):
    incident = incident_open(team=team, title="T", severity="sev4", actor=admin)
    with pytest.raises(ValidationError, match="affected servers"):
        incident_contain(incident=incident, actor=admin)
    assert kinds(incident) == [Kind.OPENED]


def test_bad_session_ids_are_refused(team, other_team, admin):
    incident = incident_open(team=team, title="T", severity="sev4", actor=admin)
    with pytest.raises(ValidationError, match="UUID"):
        incident_link_session(incident=incident, session_id="not-a-uuid", actor=admin)
    with pytest.raises(ValidationError, match="No agent session"):
        incident_link_session(incident=incident, session_id=str(uuid.uuid4()), actor=admin)
    with pytest.raises(ValidationError, match="No agent session"):
        incident_link_session(incident=incident, session_id=agent_session(other_team), actor=admin)
    sid = agent_session(team)
    incident_link_session(incident=incident, session_id=sid, actor=admin)
    with pytest.raises(ValidationError, match="already linked"):
        incident_link_session(incident=incident, session_id=sid.upper(), actor=admin)


@pytest.mark.parametrize("role", ["requester", "viewer", "outsider"])
def test_only_incident_managers_act(team, servers, admin, role, request):
    user = request.getfixturevalue(role)
    with pytest.raises(PermissionDenied):
        incident_open(team=team, title="T", severity="sev1", servers=[servers["fs"]], actor=user)
    incident = incident_open(team=team, title="T", severity="sev1", servers=[servers["fs"]], actor=admin)
    with pytest.raises(PermissionDenied):
        incident_contain(incident=incident, actor=user)
    assert not FlagState.objects.filter(enabled=False).exists()
    assert kinds(incident) == [Kind.OPENED]


# --- pages ------------------------------------------------------------------------------------


def test_pages_permission_matrix(client, team, servers, admin, viewer, outsider, reviewer):
    incident = incident_open(
        team=team, title="Prod files", severity="sev1", servers=[servers["fs"]], actor=admin
    )
    detail = f"/incidents/{incident.pk}/"
    contain = f"{detail}contain/"
    # anonymous → login, nothing changes
    assert client.get("/incidents/").status_code == 302
    assert client.post(contain).status_code == 302
    # a viewer reads, but cannot act (403) and nothing changes
    client.force_login(viewer)
    assert client.get(detail).status_code == 200
    assert client.get("/incidents/new/").status_code == 403
    assert client.post(contain).status_code == 403
    assert client.post(f"{detail}root-cause/", {"root_cause": "x"}).status_code == 403
    # another team → 404
    client.force_login(outsider)
    assert client.get(detail).status_code == 404
    assert client.post(contain).status_code == 404
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.OPEN and kinds(incident) == [Kind.OPENED]
    # permitted: the whole workflow through the pages
    client.force_login(reviewer)
    assert client.post(contain).status_code == 302
    assert client.post(f"{detail}sessions/", {"session_id": agent_session(team)}).status_code == 302
    assert client.post(f"{detail}root-cause/", {"root_cause": "a bad allowlist"}).status_code == 302
    states = [s.pk for s in contained_flag_states(incident)]
    assert client.post(f"{detail}resolve/", {"reenable": states, "note": "fixed"}).status_code == 302
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.RESOLVED
    assert not FlagState.objects.filter(enabled=False).exists()
    html = client.get(detail).content.decode()
    for kind in ("opened", "contained", "session_linked", "root_cause", "resolved", "flags_reenabled"):
        assert f'data-kind="{kind}"' in html


def test_open_form_creates_an_incident(client, team, servers, reviewer):
    client.force_login(reviewer)
    resp = client.post(
        "/incidents/new/",
        {"title": "DB writes", "severity": "sev2", "servers": [servers["db"].pk], "description": "x"},
    )
    incident = Incident.objects.get()
    assert resp.status_code == 302 and resp["Location"].endswith(f"/incidents/{incident.pk}/")
    assert list(incident.affected_servers.all()) == [servers["db"]]


def test_resolve_without_root_cause_shows_the_error(client, team, servers, reviewer):
    incident = incident_open(team=team, title="T", severity="sev2", servers=[servers["fs"]], actor=reviewer)
    client.force_login(reviewer)
    resp = client.post(f"/incidents/{incident.pk}/resolve/", {})
    assert resp.status_code == 400 and "Record the root cause" in resp.content.decode()
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.OPEN


def test_a_session_is_linked_by_the_short_id_the_pages_show(team, other_team, admin):
    """The 8 characters of the session pages (or 6+, with or without hyphens) name the session; a
    prefix two sessions share is refused, and another team's session is never found by prefix."""
    from audit.models import AgentSession

    incident = incident_open(team=team, title="T", severity="sev4", actor=admin)
    sid = agent_session(team)
    entry = incident_link_session(incident=incident, session_id=f"  {sid[:8].upper()} ", actor=admin)
    assert entry.detail == {"session_id": sid} and list(incident.sessions.values_list("pk", flat=True)) == [
        uuid.UUID(sid)
    ]
    twin_a, twin_b = (uuid.UUID("abcdef01-2345-4000-8000-00000000000" + n) for n in "12")
    for twin in (twin_a, twin_b):
        AgentSession.objects.filter(pk=agent_session(team)).update(id=twin)
    with pytest.raises(ValidationError, match="More than one session starts with abcdef01"):
        incident_link_session(incident=incident, session_id="abcdef01", actor=admin)
    incident_link_session(incident=incident, session_id=str(twin_b).replace("-", ""), actor=admin)
    foreign = agent_session(other_team)
    with pytest.raises(ValidationError, match="No agent session"):
        incident_link_session(incident=incident, session_id=foreign[:8], actor=admin)
    with pytest.raises(ValidationError, match="first 6 or more"):
        incident_link_session(incident=incident, session_id=sid[:5], actor=admin)
    assert incident.sessions.count() == 2
