"""The database itself refuses to change or remove audit events and digests."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from audit.models import AuditEvent
from audit.tasks import seal_audit_chains
from tests.audit.conftest import events, open_session, post_events

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored(gateway):
    sid = open_session(gateway)
    assert post_events(gateway, sid, events(1, 6)).status_code == 200
    return sid


def refused(sql: str, params=()) -> str:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # the test's transaction holds deferred FK checks
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with pytest.raises(DatabaseError) as info, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
    return str(info.value)


def hashes(sid):
    return list(AuditEvent.objects.filter(session_id=sid).order_by("seq").values_list("seq", "tool", "hash"))


def test_raw_update_and_delete_are_refused(stored):
    before = hashes(stored)
    assert "append-only" in refused("UPDATE audit_auditevent SET tool = 'rm_rf' WHERE seq = 3")
    assert "append-only" in refused("DELETE FROM audit_auditevent WHERE seq = 3")
    assert "append-only" in refused("DELETE FROM audit_auditevent")
    assert hashes(stored) == before


@pytest.mark.skipif(connection.vendor != "postgresql", reason="TRUNCATE exists on PostgreSQL only")
def test_raw_truncate_is_refused(stored):
    before = hashes(stored)
    assert "append-only" in refused("TRUNCATE audit_auditevent CASCADE")
    assert "TRUNCATE refused" in refused("TRUNCATE audit_auditevent CASCADE")
    assert hashes(stored) == before


def test_orm_update_and_delete_are_refused(stored):
    before = hashes(stored)
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(session_id=stored).update(result_summary="nothing happened")
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(session_id=stored, seq=2).delete()
    event = AuditEvent.objects.get(session_id=stored, seq=4)
    event.tool = "other"
    with pytest.raises(DatabaseError), transaction.atomic():
        event.save()
    assert hashes(stored) == before


def test_digests_are_append_only_too(stored):
    assert seal_audit_chains() == [1]
    assert "append-only" in refused("UPDATE audit_auditdigest SET heads = '[]'")
    assert "append-only" in refused("DELETE FROM audit_auditdigest")
    if connection.vendor == "postgresql":
        assert "append-only" in refused("TRUNCATE audit_auditdigest CASCADE")
