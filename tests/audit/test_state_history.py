"""A session's state history: every transition recorded, ending keeps the halt, stale sessions end."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.apps import apps as django_apps
from django.test import Client
from django.utils import timezone

from audit.choices import STALE_END_REASON
from audit.models import AgentSession, SessionStateChange
from audit.selectors import halted_queue, session_timeline
from audit.services import session_end, session_release
from audit.tasks import end_stale_sessions
from tests.audit.conftest import event, open_session, person, post_events
from tests.audit.test_verify import verify

pytestmark = pytest.mark.django_db

LAST = [
    {
        "ts": f"2026-11-24T09:00:0{i}Z",
        "server": "filesystem",
        "tool": "write_file",
        "args": f"path=/tmp/{i}",
        "outcome": "success",
    }
    for i in range(3)
]


def report(gateway, sid, state, trigger=None, reason="", last_calls=None, status=200):
    body = {"state": state, "trigger": trigger, "reason": reason}
    if last_calls is not None:
        body["last_calls"] = last_calls
    response = gateway.patch(f"/api/v1/gateway/sessions/{sid}/", body, format="json")
    assert response.status_code == status, response.content
    return response.json()


def history(sid) -> list[tuple[str, str, str, str]]:
    return [
        (h.from_state, h.to_state, h.trigger, h.source)
        for h in SessionStateChange.objects.filter(session_id=sid).order_by("at", "pk")
    ]


def browse(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_every_transition_is_a_history_row(gateway, reviewer):
    sid = open_session(gateway)
    report(gateway, sid, "halted", "cascade_write_chain", "3 writes in a row", LAST)
    session = AgentSession.objects.get(pk=sid)
    session_release(session=session, reviewer=reviewer, reason="one refactoring")
    report(gateway, sid, "paused", "rate_limit", "80% of the session's calls")
    session_release(session=session, reviewer=reviewer, reason="more calls are fine")
    report(gateway, sid, "ended", reason="agent quit")
    assert history(sid) == [
        ("", "active", "", "gateway"),
        ("active", "halted", "cascade_write_chain", "gateway"),
        ("halted", "active", "", "person"),
        ("active", "paused", "rate_limit", "gateway"),
        ("paused", "active", "", "person"),
        ("active", "ended", "", "gateway"),
    ]
    releases = SessionStateChange.objects.filter(session_id=sid, source="person")
    assert [(r.actor, r.reason, r.decision.kind) for r in releases] == [
        (reviewer, "one refactoring", "release"),
        (reviewer, "more calls are fine", "release"),
    ]
    # a person ending a running session is a row too
    other = open_session(gateway)
    session_end(session=AgentSession.objects.get(pk=other), reviewer=reviewer, reason="not needed")
    assert history(other)[-1] == ("active", "ended", "", "person")
    # the detail page shows the history
    page = browse(reviewer).get(f"/audit/sessions/{sid}/").content.decode()
    assert 'id="history"' in page and "one refactoring" in page and page.count('data-to="active"') == 3


def test_halted_then_ended_keeps_its_halt_in_the_list_the_queue_and_the_detail(gateway, reviewer):
    sid = open_session(gateway)
    report(gateway, sid, "halted", "cascade_write_chain", "3 consecutive writes across resources", LAST)
    report(gateway, sid, "ended", reason="agent quit", last_calls=[])
    session = AgentSession.objects.get(pk=sid)
    assert session.state == "ended" and session.ended_at is not None
    assert session.trigger == "cascade_write_chain" and len(session.last_calls) == 3
    assert session.state_reason == "3 consecutive writes across resources"
    assert history(sid)[-1] == ("halted", "ended", "", "gateway")

    web = browse(reviewer)
    listing = web.get("/audit/sessions/").content.decode()
    assert "Halted by Cascade write chain, then ended" in listing
    queue = web.get("/audit/halted/").content.decode()
    assert f'data-session="{sid}"' in queue and "Halted by Cascade write chain, then ended" in queue
    assert "path=/tmp/2" in queue  # its last calls
    detail = web.get(f"/audit/sessions/{sid}/").content.decode()
    assert 'id="halted-then-ended"' in detail and "Halted by Cascade write chain, then ended" in detail
    assert "path=/tmp/0" in detail

    # Acknowledging the log closes it in the queue.
    assert (
        person(reviewer).post(f"/api/v1/sessions/{sid}/acknowledgement/", {}, format="json").status_code
        == 201
    )
    assert sid not in {str(s.pk) for s in halted_queue(team=session.team)}


def test_a_halt_a_person_ended_or_released_leaves_the_queue(gateway, reviewer, team):
    ended_by_person = open_session(gateway)
    report(gateway, ended_by_person, "halted", "write_in_read_session", "write in a read-only session")
    session_end(session=AgentSession.objects.get(pk=ended_by_person), reviewer=reviewer, reason="unintended")
    released = open_session(gateway)
    report(gateway, released, "halted", "rate_limit", "limit")
    session_release(session=AgentSession.objects.get(pk=released), reviewer=reviewer, reason="fine")
    report(gateway, released, "ended", reason="agent quit")
    quit_while_halted = open_session(gateway)
    report(gateway, quit_while_halted, "halted", "rate_limit", "limit")
    report(gateway, quit_while_halted, "ended")
    assert {str(s.pk) for s in halted_queue(team=team)} == {quit_while_halted}
    # the list still tells both halted sessions that ended so (the released one ended active)
    listing = browse(reviewer).get("/audit/sessions/").content.decode()
    assert listing.count("then ended") == 2


def _stale(sid, minutes=60):
    AgentSession.objects.filter(pk=sid).update(last_seen_at=timezone.now() - timedelta(minutes=minutes))


def test_stale_task_ends_a_session_its_open_intent_outcome_unknown(gateway, reviewer, settings):
    settings.MCPGOV_SESSION_STALE_MINUTES = 15
    sid = open_session(gateway)
    assert (
        post_events(gateway, sid, [event(1), event(2), event(3)]).status_code == 200
    )  # call-2 has no RESULT
    fresh = open_session(gateway)
    assert post_events(gateway, fresh, [event(1)]).status_code == 200
    _stale(sid)
    _stale(fresh, minutes=5)

    assert end_stale_sessions() == [sid]
    assert end_stale_sessions() == []  # safe to run twice
    session = AgentSession.objects.get(pk=sid)
    assert session.state == "ended" and session.state_reason == STALE_END_REASON
    assert AgentSession.objects.get(pk=fresh).state == "active"
    change = SessionStateChange.objects.get(session_id=sid, to_state="ended")
    assert change.source == "portal" and change.reason == STALE_END_REASON
    assert [c["call_id"] for c in change.open_calls] == ["call-2"]
    calls = {c.call_id: c.status for c in session_timeline(session=session)}
    assert calls == {"call-1": "success", "call-2": "unknown"}
    detail = browse(reviewer).get(f"/audit/sessions/{sid}/").content.decode()
    assert "outcome unknown" in detail and "ended: gateway stopped reporting" in detail
    # No event was added: the chain is the gateway's, and it verifies.
    assert session.event_count == 3
    code, out = verify()
    assert code == 0, out

    # A late end report from the gateway's restart recovery is accepted and erases nothing.
    late = report(gateway, sid, "ended", reason="recovered from the spool", last_calls=LAST)
    assert late["state"] == "ended" and late["state_reason"] == STALE_END_REASON
    assert history(sid)[-2:] == [("active", "ended", "", "portal"), ("ended", "ended", "", "gateway")]
    report(gateway, sid, "ended")  # once recorded is enough
    assert len(history(sid)) == 3
    # Its spooled events still arrive, and the call's real outcome replaces "unknown".
    assert post_events(gateway, sid, [event(4, call=2)]).status_code == 200
    calls = {c.call_id: c.status for c in session_timeline(session=session)}
    assert calls["call-2"] == "success"
    code, out = verify()
    assert code == 0, out

    # A stale-ended session can be acknowledged.
    response = person(reviewer).post(
        f"/api/v1/sessions/{sid}/acknowledgement/", {"note": "gateway died"}, format="json"
    )
    assert response.status_code == 201 and response.json()["acknowledged"] is True


def test_a_stale_halted_session_stays_in_the_queue_with_its_halt(gateway, team):
    sid = open_session(gateway)
    report(gateway, sid, "halted", "large_data_return", "2 MB undeclared", LAST)
    _stale(sid)
    assert end_stale_sessions(stale_minutes=15) == [sid]
    session = AgentSession.objects.get(pk=sid)
    assert session.trigger == "large_data_return" and session.state_reason == "2 MB undeclared"
    assert [str(s.pk) for s in halted_queue(team=team)] == [sid]


def test_control_polls_keep_a_session_alive(gateway):
    sid = open_session(gateway)
    _stale(sid)
    assert gateway.get(f"/api/v1/gateway/sessions/{sid}/control/?since=0&wait=0").status_code == 200
    assert end_stale_sessions(stale_minutes=15) == []
    assert AgentSession.objects.get(pk=sid).state == "active"


def test_backfill_gives_existing_sessions_a_history(gateway):
    import importlib

    migration = importlib.import_module("audit.migrations.0007_session_state_history")
    sid = open_session(gateway)
    report(gateway, sid, "halted", "cascade_write_chain", "chain")
    SessionStateChange.objects.all().delete()  # as before the migration
    migration.backfill(django_apps, None)
    assert history(sid) == [
        ("", "active", "", "backfill"),
        ("active", "halted", "cascade_write_chain", "backfill"),
    ]
