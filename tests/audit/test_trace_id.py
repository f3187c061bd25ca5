"""The optional `trace_id` of an audit event: stored, hashed only when present, so old chains verify unchanged."""

from __future__ import annotations

import hashlib
from datetime import datetime

import pytest

from audit.choices import GENESIS_HASH
from audit.models import AuditEvent
from audit.services.digests import audit_verify
from mcpgov.bundle import canonical_json
from tests.audit.conftest import event, open_session, post_events

pytestmark = pytest.mark.django_db

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def documented_hash(prev: str, raw: dict, sid: str) -> str:
    """docs/audit.md's recipe: the fixed keys, plus trace_id when the event has one."""
    keys = [
        "args_summary",
        "arguments",
        "bundle_version",
        "bytes",
        "call_id",
        "duration_ms",
        "phase",
        "result",
        "result_summary",
        "seq",
        "server",
        "session",
        "status",
        "tool",
        "trigger",
        "ts",
    ]
    e = {**raw, "session": sid, "ts": datetime.fromisoformat(raw["ts"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    doc = {k: e[k] for k in keys}
    if doc["duration_ms"] is not None:
        doc["duration_ms"] = float(doc["duration_ms"])
    if e.get("trace_id"):
        doc["trace_id"] = e["trace_id"]
    return hashlib.sha256(prev.encode() + canonical_json(doc)).hexdigest()


def test_trace_id_is_stored_and_hashed_only_when_present(gateway):
    sid = open_session(gateway)
    batch = [event(1), event(2), event(3, trace_id=TRACE), event(4, trace_id=TRACE)]
    assert post_events(gateway, sid, batch).status_code == 200
    rows = list(AuditEvent.objects.filter(session_id=sid).order_by("seq"))
    assert [r.trace_id for r in rows] == [None, None, TRACE, TRACE]
    prev = GENESIS_HASH
    for raw, row in zip(batch, rows, strict=True):
        assert row.hash == documented_hash(prev, raw, sid)
        prev = row.hash
    # an event without a trace id hashes exactly as before the field existed
    legacy = event(1)
    assert "trace_id" not in legacy and rows[0].hash == documented_hash(GENESIS_HASH, legacy, sid)
    _sessions, _digests, problems = audit_verify()
    assert problems == []


def test_a_retry_with_a_different_trace_id_is_a_conflict(gateway):
    sid = open_session(gateway)
    post_events(gateway, sid, [event(1, trace_id=TRACE)])
    other = post_events(gateway, sid, [event(1, trace_id="0af7651916cd43dd8448eb211c80319c")])
    assert other.status_code == 409 and other.json()["code"] == "sequence_conflict"
    dropped = post_events(gateway, sid, [event(1)])
    assert dropped.status_code == 409 and dropped.json()["code"] == "sequence_conflict"


@pytest.mark.parametrize("bad", ["4BF92F3577B34DA6A3CE929D0E0E4736", "abc", "0" * 32, 17, TRACE + "00"])
def test_malformed_trace_ids_are_refused(gateway, bad):
    sid = open_session(gateway)
    response = post_events(gateway, sid, [event(1, trace_id=bad)])
    assert response.status_code == 400 and response.json()["field"] == "trace_id"
    assert not AuditEvent.objects.filter(session_id=sid).exists()


def test_the_session_page_shows_each_calls_trace_id(gateway, reviewer, client):
    sid = open_session(gateway)
    post_events(gateway, sid, [event(1, trace_id=TRACE), event(2, trace_id=TRACE), event(3), event(4)])
    client.force_login(reviewer)
    page = client.get(f"/audit/sessions/{sid}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count(f"trace <code>{TRACE}</code>") == 1  # the traced call; the other has none
