"""Event ingestion through the API: idempotent, contiguous, atomic, chained as docs/audit.md says."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime

import pytest

from audit.choices import GENESIS_HASH
from audit.hashing import event_canonical, loads, parse_float, stored_event_canonical
from audit.models import AgentSession, AuditEvent
from mcpgov.bundle import canonical_json
from tests.audit.conftest import event, events, open_session, post_events

pytestmark = pytest.mark.django_db


def stored(sid):
    return list(AuditEvent.objects.filter(session_id=sid).order_by("seq"))


def test_batch_is_stored_chained_and_counted(gateway):
    sid = open_session(gateway)
    batch = [
        *events(1, 4),
        event(5),
        event(6, status="fail"),
        event(7),
        event(8, status="blocked", trigger="rate_limit"),
    ]
    response = post_events(gateway, sid, batch)
    assert response.status_code == 200
    assert response.json() == {"accepted": 8, "duplicates": 0, "last_seq": 8}
    rows = stored(sid)
    assert [e.seq for e in rows] == list(range(1, 9))
    # The chain, recomputed independently of the portal's code from the documented formula.
    prev = GENESIS_HASH
    for raw, row in zip(batch, rows, strict=True):
        doc = {k: raw[k] for k in raw}
        doc["session"] = sid
        doc["ts"] = datetime.fromisoformat(raw["ts"]).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        )  # six fractional digits
        doc["duration_ms"] = None if raw["duration_ms"] is None else float(raw["duration_ms"])
        expected = hashlib.sha256(prev.encode() + canonical_json(doc)).hexdigest()
        assert row.prev_hash == prev and row.hash == expected
        prev = expected
    session = AgentSession.objects.get(pk=sid)
    assert (session.calls_total, session.calls_failed, session.calls_blocked) == (4, 1, 1)
    assert (session.last_seq, session.last_hash, session.event_count) == (8, prev, 8)
    assert session.server_list == ["github_api"] and "rate_limit" in session.triggers_seen


def test_retried_batch_stores_nothing_twice(gateway):
    sid = open_session(gateway)
    batch = events(1, 500)
    assert post_events(gateway, sid, batch).json() == {"accepted": 500, "duplicates": 0, "last_seq": 500}
    again = post_events(gateway, sid, batch)
    assert again.status_code == 200
    assert again.json() == {"accepted": 0, "duplicates": 500, "last_seq": 500}
    assert AuditEvent.objects.filter(session_id=sid).count() == 500
    # A retry that overlaps the stored tail and carries new events stores only the new ones.
    overlap = post_events(gateway, sid, events(491, 510))
    assert overlap.json() == {"accepted": 10, "duplicates": 10, "last_seq": 510}
    assert AuditEvent.objects.filter(session_id=sid).count() == 510
    assert AgentSession.objects.get(pk=sid).calls_total == 255


def test_sequence_gap_is_refused_with_last_seq(gateway):
    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 4))
    response = post_events(gateway, sid, events(6, 8))
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "sequence_gap" and body["last_seq"] == 4 and "detail" in body
    inside = post_events(gateway, sid, [event(5), event(7)])
    assert (
        inside.status_code == 409 and inside.json()["code"] == "sequence_gap" and inside.json()["index"] == 1
    )
    assert AuditEvent.objects.filter(session_id=sid).count() == 4


def test_first_batch_must_start_at_one(gateway):
    sid = open_session(gateway)
    response = post_events(gateway, sid, events(2, 3))
    assert response.status_code == 409 and response.json()["last_seq"] == 0
    assert not AuditEvent.objects.filter(session_id=sid).exists()


def test_changed_duplicate_is_a_conflict_and_nothing_is_stored(gateway):
    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 4))
    altered = events(3, 6)
    altered[1]["result_summary"] = "something else"
    response = post_events(gateway, sid, altered)
    assert response.status_code == 409
    assert response.json()["code"] == "sequence_conflict" and response.json()["index"] == 1
    assert AuditEvent.objects.filter(session_id=sid).count() == 4


@pytest.mark.parametrize(
    ("index", "field", "value"),
    [
        (0, "phase", "before"),
        (3, "ts", "yesterday"),
        (3, "ts", "2026-11-24T09:00:00"),
        (5, "seq", "6"),
        (2, "server", ""),
        (4, "trigger", "boredom"),
        (1, "status", "maybe"),
        (0, "status", "success"),  # an intent carries no status
        (7, "duration_ms", -1),
        (6, "arguments", ["not", "an", "object"]),
        (6, "bytes", 1.5),
        (2, "args_summary", "nul\x00byte"),
        (2, "colour", "blue"),
        # unhashable values where a code is expected: a 400 naming the field, not a 500
        (0, "phase", ["intent"]),
        (1, "status", {"success": True}),
        (4, "trigger", ["rate_limit"]),
        (3, "shadow", {"decision": ["allow"], "trigger": None, "bundle_version": 1}),
        (3, "shadow", {"decision": "refuse", "trigger": {"x": 1}, "bundle_version": 1}),
    ],
)
def test_bad_field_is_named_with_its_index_and_nothing_is_stored(gateway, index, field, value):
    sid = open_session(gateway)
    batch = events(1, 8)
    batch[index][field] = value
    response = post_events(gateway, sid, batch)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid" and body["index"] == index and body["field"] == field
    assert f"events[{index}].{field}" in body["detail"]
    assert not AuditEvent.objects.filter(session_id=sid).exists()
    assert AgentSession.objects.get(pk=sid).last_seq == 0


def test_batch_of_more_than_1000_is_413(gateway):
    sid = open_session(gateway)
    response = post_events(gateway, sid, events(1, 1001))
    assert response.status_code == 413 and response.json()["code"] == "batch_too_large"
    assert not AuditEvent.objects.filter(session_id=sid).exists()
    assert post_events(gateway, sid, events(1, 1000)).json()["accepted"] == 1000


def test_malformed_bodies_are_400(gateway):
    sid = open_session(gateway)
    url = f"/api/v1/gateway/sessions/{sid}/events/"
    assert gateway.post(url, data=b"{not json", content_type="application/json").status_code == 400
    assert (
        gateway.post(url, data=b'{"events": [{"seq": NaN}]}', content_type="application/json").status_code
        == 400
    )
    assert gateway.post(url, {"batch": []}, format="json").json()["code"] == "invalid"
    assert gateway.post(url, {"events": {"seq": 1}}, format="json").status_code == 400


def test_unknown_and_other_teams_sessions_are_404(gateway, other_gateway):
    assert post_events(gateway, str(uuid.uuid4()), events(1, 2)).status_code == 404
    sid = open_session(gateway)
    response = post_events(other_gateway, sid, events(1, 2))
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert not AuditEvent.objects.filter(session_id=sid).exists()


def test_people_cannot_post_events(gateway, admin):
    from tests.audit.conftest import person

    sid = open_session(gateway)
    assert post_events(person(admin), sid, events(1, 2)).status_code == 403
    assert not AuditEvent.objects.filter(session_id=sid).exists()


def test_approval_required_intent_waits_until_its_result(gateway):
    sid = open_session(gateway)
    post_events(gateway, sid, [event(1, trigger="approval_required")])
    assert [p["call_id"] for p in AgentSession.objects.get(pk=sid).pending_approvals] == ["call-1"]
    post_events(gateway, sid, [event(2)])
    assert AgentSession.objects.get(pk=sid).pending_approvals == []


def test_canonical_event_equals_the_projects_canonical_json():
    doc = {
        "args_summary": "é ✓",
        "arguments": {"b": [1, 2.5, None], "a": {"z": True}},
        "bundle_version": 2,
        "bytes": 10,
        "call_id": "c-1",
        "duration_ms": 12.25,
        "phase": "result",
        "result": {"rows": 1e-07},
        "result_summary": 'q"uote',
        "seq": 7,
        "server": "s",
        "session": str(uuid.uuid4()),
        "status": "fail",
        "tool": "t",
        "trigger": None,
        "ts": "2026-11-24T09:00:00.000000Z",
    }
    mine = event_canonical(
        session=doc["session"],
        seq=7,
        call_id="c-1",
        phase="result",
        ts=doc["ts"],
        server="s",
        tool="t",
        arguments_json=canonical_json(doc["arguments"]).decode(),
        args_summary=doc["args_summary"],
        status="fail",
        result_summary=doc["result_summary"],
        bytes_=10,
        duration_ms=12.25,
        trigger=None,
        bundle_version=2,
        result_json=canonical_json(doc["result"]).decode(),
    )
    assert mine.encode() == canonical_json(doc)


def test_numbers_round_trip_through_the_database_unchanged(gateway):
    """jsonb keeps numbers as numeric: the ingest normalisation keeps stored hashes reproducible."""
    assert parse_float("1e16") == 10**16 and parse_float("-0.0") == 0.0 and parse_float("0.1") == 0.1
    sid = open_session(gateway)
    body = (
        '{"events": [{"seq": 1, "call_id": "c", "phase": "intent", "ts": "2026-11-24T09:00:00.5+01:00", '
        '"server": "s", "tool": "t", "arguments": {"big": 1.5e300, "small": 1e-7, "neg0": -0.0, "x": 100000.0, '
        '"e": 1E5, "int": 12345678901234567890}}]}'
    )
    response = gateway.post(
        f"/api/v1/gateway/sessions/{sid}/events/", data=body.encode(), content_type="application/json"
    )
    assert response.status_code == 200, response.content
    row = AuditEvent.objects.get(session_id=sid, seq=1)
    assert (
        hashlib.sha256(row.prev_hash.encode() + stored_event_canonical(row).encode()).hexdigest() == row.hash
    )
    assert row.arguments == loads(body)["events"][0]["arguments"]


def test_events_of_the_wider_surface_are_taken_as_they_are(gateway):
    """The gateway names the MCP method in `tool` for resource reads and the requests a server makes of
    the agent; a refused server request carries `server_request_denied` (docs/enforcer-api.md)."""
    sid = open_session(gateway)
    batch = [
        event(1, server="filesystem", tool="resources/read", arguments={"uri": "file:///tmp/a"}),
        event(2, server="filesystem", tool="resources/read", bytes=12),
        event(3, tool="sampling/createMessage", arguments={"output_limit": 500, "messages": 1}),
        event(4, tool="sampling/createMessage", status="blocked", trigger="server_request_denied"),
    ]
    assert post_events(gateway, sid, batch).status_code == 200
    rows = stored(sid)
    assert [(e.tool, e.status, e.trigger) for e in rows[1::2]] == [
        ("resources/read", "success", None),
        ("sampling/createMessage", "blocked", "server_request_denied"),
    ]
    assert "server_request_denied" in AgentSession.objects.get(pk=sid).triggers_seen


AWKWARD = 'tab\there\nnew line\r\\back\\slash \\N \\. "quoted" é 😀 \u2028'


def test_awkward_text_is_stored_exactly_as_sent_and_its_chain_recomputes(gateway):
    """Rows go to PostgreSQL as one pre-encoded COPY text buffer: every COPY special character
    (tab, newline, carriage return, backslash, a literal \\N) must come back as sent."""
    sid = open_session(gateway)
    batch = events(1, 4)
    batch[0].update(call_id="c\t1\\", args_summary=AWKWARD, arguments={AWKWARD: [AWKWARD, {"k\\": "\\N"}]})
    batch[1].update(
        call_id="c\t1\\", server="srv\\x", tool="t\nool", result_summary=AWKWARD, result={"text": AWKWARD}
    )
    batch[2].update(
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        shadow={"decision": "refuse", "trigger": None, "bundle_version": 2},
    )
    assert post_events(gateway, sid, batch).status_code == 200
    rows = stored(sid)
    assert (rows[0].call_id, rows[0].args_summary, rows[0].arguments) == (
        "c\t1\\",
        AWKWARD,
        {AWKWARD: [AWKWARD, {"k\\": "\\N"}]},
    )
    assert (rows[1].server, rows[1].tool, rows[1].result_summary, rows[1].result) == (
        "srv\\x",
        "t\nool",
        AWKWARD,
        {"text": AWKWARD},
    )
    assert rows[2].trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and rows[2].shadow["decision"] == "refuse"
    assert rows[3].arguments == batch[3]["arguments"] and rows[3].duration_ms == 34.5
    prev = GENESIS_HASH
    for row in rows:  # from the stored values, as verify_audit does
        assert row.prev_hash == prev
        prev = hashlib.sha256(prev.encode() + stored_event_canonical(row).encode()).hexdigest()
        assert row.hash == prev


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-24T09:00:00.123456Z",  # what gateways send: kept as the canonical text
        "2026-11-24T09:00:00.123456+00:00",
        "2026-11-24 09:00:00.123456Z",  # same length as the canonical form, not canonical
        "2026-11-24T10:00:00.123456+01:00",
    ],
)
def test_every_spelling_of_a_time_is_stored_and_hashed_in_the_canonical_form(gateway, ts):
    sid = open_session(gateway)
    assert post_events(gateway, sid, [event(1, ts=ts)]).status_code == 200, ts
    row = AuditEvent.objects.get(session_id=sid)
    assert row.ts == datetime.fromisoformat("2026-11-24T09:00:00.123456+00:00")
    assert '"ts":"2026-11-24T09:00:00.123456Z"' in stored_event_canonical(row)
    assert (
        hashlib.sha256(row.prev_hash.encode() + stored_event_canonical(row).encode()).hexdigest() == row.hash
    )


def test_a_duration_beyond_a_double_is_refused_not_a_500(gateway):
    sid = open_session(gateway)
    batch = events(1, 2)
    batch[1]["duration_ms"] = 10**400
    response = post_events(gateway, sid, batch)
    assert response.status_code == 400 and response.json()["field"] == "duration_ms"
    assert not AuditEvent.objects.filter(session_id=sid).exists()


def test_ingest_lag_histogram_counts_each_event_as_observe_would():
    from prometheus_client import CollectorRegistry, Histogram

    from portal.metrics import histogram_observe_many

    values = [0.0, 0.1, 0.1000001, 0.3, 5.0, 7.5, 86400.0, 1e9]
    one, many = (
        Histogram(f"lag_{name}", "x", buckets=(0.1, 0.25, 5.0, 86400.0), registry=CollectorRegistry())
        for name in ("one", "many")
    )
    for v in values:
        one.observe(v)
    histogram_observe_many(many, values)
    samples = [
        [
            (s.name.split("_", 2)[-1], s.labels, s.value)
            for s in m.collect()[0].samples
            if not s.name.endswith("_created")  # when each histogram was made
        ]
        for m in (one, many)
    ]
    assert samples[0] == samples[1]
    assert ("bucket", {"le": "+Inf"}, 8.0) in samples[1]
