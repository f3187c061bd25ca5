"""Sealing cadence (interval, session end, without beat) and verify_audit's coverage checks.

The attacker rewrites events consistently — new content, every later hash recomputed, the
session's chain head updated — with the append-only triggers lifted, as the table owner could.
"""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.db import connection

from audit.hashing import chain_hash, stored_event_canonical
from audit.models import AgentSession, AuditDigest, AuditEvent
from audit.services import session_end
from audit.tasks import seal_audit_chains
from tests.audit.conftest import events, open_session, post_events
from tests.audit.test_verify import _uuid_param, attacker, verify

pytestmark = pytest.mark.django_db


def rewrite_consistently(sid: str, seq: int, summary: str = "nothing to see") -> None:
    """Edit event `seq` and recompute its hash and every later one, and the session's head."""
    rows = list(AuditEvent.objects.filter(session_id=sid).order_by("seq"))
    prev = rows[0].prev_hash
    with attacker() as cursor:
        for event in rows:
            if event.seq == seq:
                event.result_summary = summary
            event.prev_hash = prev
            event.hash = prev = chain_hash(prev, stored_event_canonical(event))
            cursor.execute(
                "UPDATE audit_auditevent SET result_summary = %s, prev_hash = %s, hash = %s WHERE id = %s",
                [event.result_summary, event.prev_hash, event.hash, event.pk],
            )
        cursor.execute("UPDATE audit_agentsession SET last_hash = %s WHERE id = %s", [prev, _uuid_param(sid)])


def test_the_default_interval_is_at_most_a_minute_and_drives_beat():
    assert settings.MCPGOV_SEAL_INTERVAL_SECONDS <= 60
    assert settings.CELERY_BEAT_SCHEDULE["audit-seal-chains"] == {
        "task": "audit.seal_audit_chains",
        "schedule": float(settings.MCPGOV_SEAL_INTERVAL_SECONDS),
    }


def test_a_gateway_ending_its_session_seals_it_and_a_later_rewrite_is_detected(
    gateway, django_capture_on_commit_callbacks
):
    sid = open_session(gateway)
    with django_capture_on_commit_callbacks(execute=True):
        assert post_events(gateway, sid, events(1, 6)).status_code == 200
    assert not AuditDigest.objects.exists()  # not due yet: the interval has not passed
    with django_capture_on_commit_callbacks(execute=True):
        response = gateway.patch(f"/api/v1/gateway/sessions/{sid}/", {"state": "ended"}, format="json")
    assert response.status_code == 200
    digest = AuditDigest.objects.get()
    assert digest.heads[0]["seq"] == 6
    assert verify()[0] == 0

    rewrite_consistently(sid, 4)
    code, out = verify()
    assert code == 1
    assert f"ALTERED: digest #1 session {sid} seq 6: does not match the head sealed in digest #1." in out


def test_a_reviewer_ending_a_session_seals_it(gateway, reviewer, django_capture_on_commit_callbacks):
    sid = open_session(gateway)
    with django_capture_on_commit_callbacks(execute=True):
        post_events(gateway, sid, events(1, 4))
    with django_capture_on_commit_callbacks(execute=True):
        session_end(session=AgentSession.objects.get(pk=sid), reviewer=reviewer, reason="done here")
    assert AuditDigest.objects.get().heads[0]["seq"] == 4


def test_ingestion_seals_without_beat_once_the_oldest_unsealed_event_is_older_than_the_interval(
    gateway, settings, django_capture_on_commit_callbacks
):
    """Eager Celery and no beat, as under `make run`: the next batch after the interval seals."""
    settings.MCPGOV_SEAL_INTERVAL_SECONDS = 1
    sid = open_session(gateway)
    with django_capture_on_commit_callbacks(execute=True):
        post_events(gateway, sid, events(1, 4))
    assert not AuditDigest.objects.exists()
    time.sleep(1.2)  # the events are now older than the interval (a lower bound, not a timing assertion)
    with django_capture_on_commit_callbacks(execute=True):
        post_events(gateway, sid, events(5, 6))
    assert AuditDigest.objects.get().heads[0]["seq"] == 6
    with django_capture_on_commit_callbacks(execute=True):
        post_events(gateway, sid, events(7, 8))
    assert AuditDigest.objects.count() == 1  # the new batch is fresh: no seal yet

    rewrite_consistently(sid, 2)  # an event that was unsealed until the interval passed
    code, out = verify()
    assert code == 1 and f"ALTERED: digest #1 session {sid} seq 6" in out


def test_fresh_unsealed_events_are_not_reported(gateway):
    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 4))
    code, out = verify()
    assert code == 0 and "0 digest(s): all intact" in out


@pytest.fixture
def no_grace(settings):
    """Every event is overdue for a seal the moment it is stored (interval and grace 0)."""
    settings.MCPGOV_SEAL_INTERVAL_SECONDS = 0
    settings.MCPGOV_SEAL_GRACE_SECONDS = 0


def test_all_digests_deleted_and_sealed_marks_reset_is_reported(gateway, other_gateway, no_grace):
    sid = open_session(gateway)
    other = open_session(other_gateway)
    post_events(gateway, sid, events(1, 6))
    post_events(other_gateway, other, events(1, 2))
    assert seal_audit_chains() == [1, 1]
    assert verify()[0] == 0
    with attacker() as cursor:
        cursor.execute("DELETE FROM audit_auditdigest")
        cursor.execute("UPDATE audit_agentsession SET sealed_seq = 0")
    code, out = verify()
    assert code == 1
    assert f"UNSEALED: session {sid} seq 1: seqs 1..6 stored since" in out
    assert f"UNSEALED: session {other} seq 1: seqs 1..2 stored since" in out
    assert "and 0 digest(s): 2 problem(s)." in out


def test_the_last_digest_deleted_with_the_marks_reset_is_reported(gateway, no_grace):
    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 4))
    seal_audit_chains()
    post_events(gateway, sid, events(5, 8))
    assert seal_audit_chains() == [2]
    pk = _uuid_param(sid)
    with attacker() as cursor:
        cursor.execute("DELETE FROM audit_auditdigest WHERE number = 2")
        cursor.execute("UPDATE audit_agentsession SET sealed_seq = 4 WHERE id = %s", [pk])
    code, out = verify()
    assert code == 1
    assert f"UNSEALED: session {sid} seq 5: seqs 5..8 stored since" in out
    assert "DIGEST_REMOVED" not in out  # the chain of remaining digests is intact: coverage finds it


@pytest.mark.skipif(connection.vendor != "postgresql", reason="one check of the due query is enough")
def test_the_due_check_per_batch_is_one_query(gateway, django_assert_max_num_queries):
    from audit.services.sealing import seal_is_due

    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 4))
    team_id = AgentSession.objects.get(pk=sid).team_id
    with django_assert_max_num_queries(1):
        assert seal_is_due(team_id) is False


def test_a_seal_check_that_found_nothing_due_is_not_repeated_until_one_can_be(gateway, settings):
    """Ingestion remembers the last seal check per team; a later batch skips the query until the
    oldest unsealed event can be older than the interval, and then seals."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from audit.services import sealing

    settings.MCPGOV_SEAL_INTERVAL_SECONDS = 3600
    sid = open_session(gateway)
    team_id = AgentSession.objects.get(pk=sid).team_id
    sealing._seal_now(team_id, only_if_due=True)  # remembers: nothing due for an hour
    with CaptureQueriesContext(connection) as queries:
        sealing._seal_now(team_id, only_if_due=True)
    assert len(queries) == 0
    post_events(gateway, sid, events(1, 2))
    settings.MCPGOV_SEAL_INTERVAL_SECONDS = 0  # now every unsealed event is overdue
    sealing._seal_now(team_id, only_if_due=True)
    assert AuditDigest.objects.get().heads[0]["seq"] == 2
