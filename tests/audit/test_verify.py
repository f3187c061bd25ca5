"""`manage.py verify_audit` names every event or digest an attacker with database access changed.

The attacker is simulated by lifting the append-only triggers in SQL, as someone with the
table owner's rights could.
"""

from __future__ import annotations

import contextlib
import io

import pytest
from django.core.management import call_command
from django.db import connection

from audit import db as audit_db
from audit.hashing import chain_hash, stored_event_canonical
from audit.models import AgentSession, AuditDigest, AuditEvent
from audit.tasks import seal_audit_chains
from tests.audit.conftest import events, open_session, post_events

pytestmark = pytest.mark.django_db


@contextlib.contextmanager
def attacker():
    """Cursor with the audit triggers disabled (ALTER TABLE … DISABLE TRIGGER on PostgreSQL)."""
    before, after = audit_db.suspend_sql(connection.vendor)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # the test's transaction holds deferred FK checks
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for statement in before:
            cursor.execute(statement)
        try:
            yield cursor
        finally:
            for statement in after:
                cursor.execute(statement)


def verify(*args) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("verify_audit", *args, stdout=out)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue()


@pytest.fixture
def sid(gateway):
    sid = open_session(gateway)
    assert post_events(gateway, sid, events(1, 10)).status_code == 200
    return sid


def _uuid_param(sid):
    """The session id as the database stores it (hex without dashes on SQLite)."""
    return AgentSession._meta.pk.get_db_prep_value(AgentSession.objects.get(pk=sid).pk, connection)


def test_intact_chain_passes(sid):
    seal_audit_chains()
    code, out = verify()
    assert code == 0 and "all intact" in out and "1 session chain(s) and 1 digest(s)" in out


def test_edited_field_is_named(sid):
    with attacker() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET result_summary = 'nothing to see' WHERE session_id = %s AND seq = 4",
            [_uuid_param(sid)],
        )
    code, out = verify()
    assert code == 1
    assert f"ALTERED: session {sid} seq 4: its stored fields do not match its hash." in out
    assert out.count("ALTERED") == 1 and "REMOVED" not in out and "INSERTED" not in out


def test_deleted_event_is_named(sid):
    with attacker() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE session_id = %s AND seq = 6", [_uuid_param(sid)])
    code, out = verify()
    assert code == 1
    assert f"REMOVED: session {sid} seq 6: seq 6 missing" in out
    assert "ALTERED" not in out and "INSERTED" not in out


def test_event_inserted_in_the_middle_is_named(sid):
    """A forged event at seq 5 with a valid hash of its own; the attacker renumbers 5..10 to 6..11."""
    pk = _uuid_param(sid)
    template = AuditEvent.objects.get(session_id=sid, seq=5)
    previous = AuditEvent.objects.get(session_id=sid, seq=4)
    forged = AuditEvent(**{f.attname: getattr(template, f.attname) for f in AuditEvent._meta.concrete_fields})
    forged.pk, forged.call_id, forged.args_summary = None, "forged", "path=/etc/shadow"
    forged.prev_hash = previous.hash
    forged.hash = chain_hash(forged.prev_hash, stored_event_canonical(forged))
    with attacker() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET seq = seq + 1000 WHERE session_id = %s AND seq >= 5", [pk]
        )
        cursor.execute(
            "UPDATE audit_auditevent SET seq = seq - 999 WHERE session_id = %s AND seq > 1000", [pk]
        )
        forged.save(force_insert=True)
        cursor.execute("UPDATE audit_agentsession SET last_seq = 11 WHERE id = %s", [pk])
    code, out = verify()
    assert code == 1
    assert f"INSERTED: session {sid} seq 5: the next event chains past it to its predecessor." in out
    assert f"RENUMBERED: session {sid} seq 6: stored as seq 6, chained as seq 5." in out
    assert "REMOVED" not in out and "ALTERED" not in out


def test_event_removed_and_the_rest_renumbered_is_named(sid):
    pk = _uuid_param(sid)
    with attacker() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE session_id = %s AND seq = 3", [pk])
        cursor.execute("UPDATE audit_auditevent SET seq = seq + 1000 WHERE session_id = %s AND seq > 3", [pk])
        cursor.execute(
            "UPDATE audit_auditevent SET seq = seq - 1001 WHERE session_id = %s AND seq > 1000", [pk]
        )
        cursor.execute("UPDATE audit_agentsession SET last_seq = 9 WHERE id = %s", [pk])
    code, out = verify()
    assert code == 1
    assert f"REMOVED: session {sid} seq 3: seq 3 missing" in out
    assert f"RENUMBERED: session {sid} seq 3: stored as seq 3, chained as seq 4." in out


def test_tail_rewritten_with_fresh_hashes_is_caught_by_the_sealed_digest(sid):
    """An attacker who re-hashes every event after the edit leaves a consistent chain; the digest is not."""
    seal_audit_chains()
    with attacker():
        prev = AuditEvent.objects.get(session_id=sid, seq=6).prev_hash
        for event in AuditEvent.objects.filter(session_id=sid, seq__gte=6).order_by("seq"):
            if event.seq == 6:
                event.result_summary = "rewritten"
            event.prev_hash = prev
            event.hash = prev = chain_hash(prev, stored_event_canonical(event))
            event.save()
        AgentSession.objects.filter(pk=sid).update(last_hash=prev)
    code, out = verify()
    assert code == 1
    assert f"ALTERED: digest #1 session {sid} seq 10: does not match the head sealed in digest #1." in out


def test_digest_tampering_is_named(sid, gateway):
    seal_audit_chains()
    post_events(gateway, sid, events(11, 12))
    seal_audit_chains()
    post_events(gateway, sid, events(13, 14))
    seal_audit_chains()
    assert AuditDigest.objects.count() == 3
    with attacker() as cursor:
        cursor.execute(
            "UPDATE audit_auditdigest SET created_at = created_at + interval '1 hour' WHERE number = 2"
            if connection.vendor == "postgresql"
            else "UPDATE audit_auditdigest SET created_at = datetime(created_at, '+1 hour') WHERE number = 2"
        )
    code, out = verify()
    assert code == 1
    assert "DIGEST_ALTERED: digest #2: its contents do not match its digest hash." in out
    assert "SIGNATURE_INVALID: digest #2" in out


def test_removed_digests_are_named(sid, gateway):
    seal_audit_chains()
    post_events(gateway, sid, events(11, 12))
    seal_audit_chains()
    post_events(gateway, sid, events(13, 14))
    seal_audit_chains()
    with attacker() as cursor:
        cursor.execute("DELETE FROM audit_auditdigest WHERE number IN (2, 3)")
    code, out = verify()
    assert code == 1
    assert (
        f"DIGEST_REMOVED: session {sid}: the session was sealed up to seq 14 but no digest holds that head."
        in out
    )
    with attacker() as cursor:
        cursor.execute("DELETE FROM audit_auditdigest WHERE number = 1")
        cursor.execute(
            "INSERT INTO audit_auditdigest (team_id, number, created_at, heads, prev_digest_hash, digest_hash, kid, "
            "signature) VALUES (%s, 2, %s, %s, %s, 'x', 'k', 's')",
            [
                AgentSession.objects.get(pk=sid).team_id,
                AgentSession.objects.get(pk=sid).started_at,
                "[]",
                "0" * 64,
            ],
        )
    code, out = verify()
    assert "DIGEST_REMOVED: digest #1: digest(s) #1..#1 missing." in out


def test_team_option_limits_the_check(sid, other_team):
    code, out = verify("--team", other_team.slug)
    assert code == 0 and "0 session chain(s)" in out
    code, out = verify("--team", "acme")
    assert code == 0 and "1 session chain(s)" in out
