"""Audit event ingestion: validate a gateway's batch, chain it, store it in one transaction.

Idempotent by (session, seq): events already stored are skipped when identical, refused when
different. The first new event must follow the stored chain head. On PostgreSQL the rows go
in with one COPY; elsewhere with one bulk INSERT. Nothing of a refused batch is stored.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit.choices import MAX_BATCH, CallStatus, ErrorCode, Phase, Trigger
from audit.hashing import encode_json, event_canonical, format_ts
from audit.models import EVENT_WIRE_FIELDS, AgentSession, AuditEvent, AuditSink
from audit.services.sealing import seal_on_commit
from audit.services.streaming import (
    STREAM_INGEST_LOCK_SQL,
    STREAM_LOCK_CLASS,
    stream_ingest_lock,
    stream_on_commit,
)
from governance.services.notifications import call_approvals_waiting
from portal import metrics
from portal.errors import Conflict, NotFound, ServiceError

_PHASES = frozenset(Phase.values)
_STATUSES = frozenset(CallStatus.values)
_TRIGGERS = frozenset(Trigger.values)
_FIELDS = frozenset(EVENT_WIRE_FIELDS)
_SHADOW_DECISIONS = frozenset({"allow", "approval", "refuse"})
_SHADOW_KEYS = frozenset({"decision", "trigger", "bundle_version"})
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_MAX_SEQ = 2**63 - 1
_MAX_BUNDLE_VERSION = 2**31 - 1
_NAME_MAX = 200
_CALL_ID_MAX = 64
_NULL_JSON = "null"

COPY_COLUMNS = ("session_id", *EVENT_WIRE_FIELDS, "prev_hash", "hash", "received_at")


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    last_seq: int

    def as_dict(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "last_seq": self.last_seq}


@dataclass(slots=True)
class _Event:
    seq: int
    call_id: str
    phase: str
    ts: datetime
    ts_text: str  # canonical: what is hashed and what COPY stores
    server: str
    tool: str
    arguments: Any
    arguments_json: str
    args_summary: str
    status: str | None
    result_summary: str
    bytes: int | None
    duration_ms: float | None
    trigger: str | None
    bundle_version: int | None
    result: Any
    result_json: str
    trace_id: str | None
    shadow: dict[str, Any] | None
    canonical: bytes
    prev_hash: str = ""
    hash: str = ""


def _bad(index: int, field: str, message: str) -> ServiceError:
    return ServiceError(f"events[{index}].{field}: {message}", ErrorCode.INVALID, index=index, field=field)


def _str(raw: dict, index: int, field: str, *, required: bool, max_length: int | None = None) -> str:
    value = raw.get(field)
    if value is None:
        if required:
            raise _bad(index, field, "this field is required.")
        return ""
    if type(value) is not str:
        raise _bad(index, field, "must be a string.")
    if required and not value:
        raise _bad(index, field, "must not be empty.")
    if max_length is not None and len(value) > max_length:
        raise _bad(index, field, f"at most {max_length} characters.")
    return value


def _int(raw: dict, index: int, field: str, *, required: bool, maximum: int) -> int | None:
    value = raw.get(field)
    if value is None:
        if required:
            raise _bad(index, field, "this field is required.")
        return None
    if type(value) is not int or value < 0 or value > maximum:
        raise _bad(index, field, f"must be an integer between 0 and {maximum}.")
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _parse_ts(value: Any, index: int) -> datetime:
    if type(value) is not str:
        raise _bad(index, "ts", "must be an RFC 3339 time string.")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _bad(index, "ts", f"{value!r} is not an RFC 3339 time.") from None
    if parsed.tzinfo is None:
        raise _bad(index, "ts", "must carry a time zone (use Z for UTC).")
    return parsed.astimezone(UTC)


def _shadow(raw: dict, index: int) -> dict[str, Any] | None:
    """What a shadow bundle would have decided (docs/enforcer-api.md): absent, or exactly
    {decision, trigger, bundle_version}."""
    shadow = raw.get("shadow")
    if shadow is None:
        return None
    if type(shadow) is not dict or shadow.keys() != _SHADOW_KEYS:
        raise _bad(index, "shadow", "must be an object with decision, trigger and bundle_version.")
    if type(shadow["decision"]) is not str or shadow["decision"] not in _SHADOW_DECISIONS:
        raise _bad(index, "shadow", "decision must be 'allow', 'approval' or 'refuse'.")
    if shadow["trigger"] is not None and (
        type(shadow["trigger"]) is not str or shadow["trigger"] not in _TRIGGERS
    ):
        raise _bad(index, "shadow", f"unknown trigger {shadow['trigger']!r}.")
    version = shadow["bundle_version"]
    if version is not None and (type(version) is not int or not 0 <= version <= _MAX_BUNDLE_VERSION):
        raise _bad(index, "shadow", f"bundle_version must be an integer between 0 and {_MAX_BUNDLE_VERSION}.")
    return {"decision": shadow["decision"], "trigger": shadow["trigger"], "bundle_version": version}


def _canonical_ts(value: Any, index: int) -> tuple[datetime, str]:
    """The parsed time and its canonical text; a gateway's own `...T09:00:00.123456Z` is kept as sent."""
    ts = _parse_ts(value, index)
    if len(value) == 27 and value[26] == "Z" and value[19] == "." and value[10] == "T":
        return ts, value  # already canonical (fromisoformat accepted it: digits and separators are right)
    return ts, format_ts(ts)


def validate_event(raw: Any, index: int, session_id: str) -> _Event:
    """One event of a batch, checked and canonicalised; ServiceError names the field and index.

    Lean on purpose (it runs for every event): each field gets one type test inline, and only a
    value that fails it goes through the helper that words the error (`_str`, `_int`, ...).
    """
    if type(raw) is not dict:
        raise ServiceError(f"events[{index}]: must be an object.", ErrorCode.INVALID, index=index, field="")
    if not raw.keys() <= _FIELDS:
        field = sorted(raw.keys() - _FIELDS)[0]
        raise _bad(index, field, "unknown field.")
    get = raw.get
    seq = get("seq")
    if type(seq) is not int or seq < 1 or seq > _MAX_SEQ:
        raise _bad(index, "seq", "must be an integer >= 1.")
    phase = get("phase")
    if type(phase) is not str or phase not in _PHASES:  # (str first: a list or dict is unhashable)
        raise _bad(index, "phase", "must be 'intent' or 'result'.")
    status = get("status")
    result = get("result")
    if phase == Phase.RESULT:
        if type(status) is not str or status not in _STATUSES:
            raise _bad(index, "status", "a result needs status 'success', 'fail' or 'blocked'.")
    else:
        if status is not None:
            raise _bad(index, "status", "only a result carries a status.")
        if result is not None:
            raise _bad(index, "result", "only a result carries a result payload.")
    trigger = get("trigger")
    if trigger is not None and (type(trigger) is not str or trigger not in _TRIGGERS):
        raise _bad(index, "trigger", f"unknown trigger {trigger!r}.")
    duration = get("duration_ms")
    if duration is not None:
        if type(duration) not in (int, float) or duration < 0:
            raise _bad(index, "duration_ms", "must be a number >= 0.")
        try:
            duration = float(duration)
        except OverflowError:  # an integer beyond a double's range
            raise _bad(index, "duration_ms", "must be a number >= 0.") from None
    arguments = get("arguments")
    if arguments is not None and type(arguments) is not dict:
        raise _bad(index, "arguments", "must be an object or null.")
    ts, ts_text = _canonical_ts(get("ts"), index)
    call_id = get("call_id")
    if type(call_id) is not str or not call_id or len(call_id) > _CALL_ID_MAX:
        call_id = _str(raw, index, "call_id", required=True, max_length=_CALL_ID_MAX)
    server = get("server")
    if type(server) is not str or not server or len(server) > _NAME_MAX:
        server = _str(raw, index, "server", required=True, max_length=_NAME_MAX)
    tool = get("tool")
    if type(tool) is not str or not tool or len(tool) > _NAME_MAX:
        tool = _str(raw, index, "tool", required=True, max_length=_NAME_MAX)
    args_summary = get("args_summary")
    if type(args_summary) is not str:
        args_summary = _str(raw, index, "args_summary", required=False)
    result_summary = get("result_summary")
    if type(result_summary) is not str:
        result_summary = _str(raw, index, "result_summary", required=False)
    size = get("bytes")
    if size is not None and (type(size) is not int or size < 0 or size > _MAX_SEQ):
        _int(raw, index, "bytes", required=False, maximum=_MAX_SEQ)
    bundle_version = get("bundle_version")
    if bundle_version is not None and (
        type(bundle_version) is not int or bundle_version < 0 or bundle_version > _MAX_BUNDLE_VERSION
    ):
        _int(raw, index, "bundle_version", required=False, maximum=_MAX_BUNDLE_VERSION)
    trace_id = get("trace_id")
    if trace_id is not None:
        trace_id = _str(raw, index, "trace_id", required=False) or None
        if trace_id and (not _TRACE_ID.fullmatch(trace_id) or trace_id == "0" * 32):
            raise _bad(index, "trace_id", "must be 32 lowercase hex digits (a W3C trace id), not all zeros.")
    shadow = None if get("shadow") is None else _shadow(raw, index)
    try:
        arguments_json = _NULL_JSON if arguments is None else encode_json(arguments)
    except (TypeError, ValueError) as exc:
        raise _bad(index, "arguments", f"not encodable as JSON ({exc}).") from None
    try:
        result_json = _NULL_JSON if result is None else encode_json(result)
    except (TypeError, ValueError) as exc:
        raise _bad(index, "result", f"not encodable as JSON ({exc}).") from None
    canonical = event_canonical(
        session=session_id,
        seq=seq,
        call_id=call_id,
        phase=phase,
        ts=ts_text,
        server=server,
        tool=tool,
        arguments_json=arguments_json,
        args_summary=args_summary,
        status=status,
        result_summary=result_summary,
        bytes_=size,
        duration_ms=duration,
        trigger=trigger,
        bundle_version=bundle_version,
        result_json=result_json,
        trace_id=trace_id,
        shadow=shadow,
    )
    if "\\u0000" in canonical:  # NUL cannot be stored in PostgreSQL text/jsonb
        for field in ("call_id", "server", "tool", "args_summary", "result_summary", "arguments", "result"):
            if _has_nul(raw.get(field)):
                raise _bad(index, field, "must not contain NUL characters.")
    try:
        canonical_bytes = canonical.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(index, "", "contains an unpaired surrogate, which is not valid Unicode.") from None
    return _Event(
        seq,
        call_id,
        phase,
        ts,
        ts_text,
        server,
        tool,
        arguments,
        arguments_json,
        args_summary,
        status,
        result_summary,
        size,
        duration,
        trigger,
        bundle_version,
        result,
        result_json,
        trace_id,
        shadow,
        canonical_bytes,
    )


def validate_batch(events: Any, session_id: str) -> list[_Event]:
    if not isinstance(events, list):
        raise ServiceError("events: must be a list of events.", ErrorCode.INVALID, field="events")
    if len(events) > MAX_BATCH:
        raise ServiceError(
            f"A batch holds at most {MAX_BATCH} events; this one has {len(events)}.",
            ErrorCode.BATCH_TOO_LARGE,
            status=413,
            max=MAX_BATCH,
        )
    validated = [validate_event(raw, i, session_id) for i, raw in enumerate(events)]
    for i in range(1, len(validated)):
        if validated[i].seq != validated[i - 1].seq + 1:
            raise Conflict(
                f"events[{i}].seq: {validated[i].seq} does not follow {validated[i - 1].seq}; "
                "a batch must hold contiguous sequence numbers.",
                ErrorCode.SEQUENCE_GAP,
                index=i,
                field="seq",
                last_seq=None,
            )
    return validated


# COPY text format: backslash, tab, newline and carriage return are escaped; \\N (one backslash) is NULL.
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str) -> str:
    return value.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(value) else value


def _copy_json(text: str) -> str:
    # canonical JSON escapes every control character, so only its backslashes need doubling
    return text.replace("\\", "\\\\") if "\\" in text else text


def _copy_rows(session_id, events: list[_Event], received_at: datetime) -> None:
    """All rows of the batch as one pre-encoded COPY text buffer, written in one call.

    psycopg's per-row `write_row` adapts every value in Python (~12 µs an event); the values here
    are already text (canonical JSON, the canonical time) or small ints, so the row is one
    f-string. COPY_COLUMNS order.
    """
    sid = str(session_id)
    received = format_ts(received_at)
    text, js, null = _copy_text, _copy_json, "\\N"
    lines = [
        f"{sid}\t{e.seq}\t{text(e.call_id)}\t{e.phase}\t{e.ts_text}\t{text(e.server)}\t{text(e.tool)}\t"
        f"{null if e.arguments is None else js(e.arguments_json)}\t{text(e.args_summary)}\t"
        f"{null if e.status is None else e.status}\t{text(e.result_summary)}\t"
        f"{null if e.bytes is None else e.bytes}\t{null if e.duration_ms is None else repr(e.duration_ms)}\t"
        f"{null if e.trigger is None else e.trigger}\t{null if e.bundle_version is None else e.bundle_version}\t"
        f"{null if e.result is None else js(e.result_json)}\t{null if e.trace_id is None else e.trace_id}\t"
        f"{null if e.shadow is None else js(encode_json(e.shadow))}\t{e.prev_hash}\t{e.hash}\t{received}\n"
        for e in events
    ]
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(
            f"COPY {AuditEvent._meta.db_table} ({', '.join(COPY_COLUMNS)}) FROM STDIN"
        ) as copy,
    ):
        copy.write("".join(lines))


def _insert_rows(session_id, events: list[_Event], received_at: datetime) -> None:
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(
                session_id=session_id,
                seq=e.seq,
                call_id=e.call_id,
                phase=e.phase,
                ts=e.ts,
                server=e.server,
                tool=e.tool,
                arguments=e.arguments,
                args_summary=e.args_summary,
                status=e.status,
                result_summary=e.result_summary,
                bytes=e.bytes,
                duration_ms=e.duration_ms,
                trigger=e.trigger,
                bundle_version=e.bundle_version,
                result=e.result,
                trace_id=e.trace_id,
                shadow=e.shadow,
                prev_hash=e.prev_hash,
                hash=e.hash,
                received_at=received_at,
            )
            for e in events
        ],
        batch_size=500,
    )


def _use_copy() -> bool:
    if connection.vendor != "postgresql":
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return is_psycopg3


@dataclass(slots=True)
class _SessionHead:
    """What ingestion reads of the locked session row."""

    pk: Any
    last_seq: int
    last_hash: str
    event_count: int
    calls_total: int
    calls_blocked: int
    calls_failed: int
    last_event_at: datetime | None
    servers_used: str
    triggers_seen: str
    pending_approvals: list
    has_sinks: bool  # whether the team has an enabled SIEM sink (else no kick after commit)


# Table names come from the models; every value is a parameter.
_SESSION_LOCK_SQL = (
    f"{STREAM_INGEST_LOCK_SQL}; SELECT last_seq, last_hash, event_count, calls_total, calls_blocked, "  # noqa: S608
    "calls_failed, last_event_at, servers_used, triggers_seen, pending_approvals, "
    f"EXISTS (SELECT 1 FROM {AuditSink._meta.db_table} k WHERE k.team_id = s.team_id AND k.enabled) "
    f"FROM {AgentSession._meta.db_table} s "
    "WHERE s.id = %s AND s.team_id = %s AND s.environment_id = %s FOR UPDATE OF s"
)
_ADVANCE_FIELDS = (
    "last_seq",
    "last_hash",
    "event_count",
    "calls_total",
    "calls_blocked",
    "calls_failed",
    "last_event_at",
    "servers_used",
    "triggers_seen",
    "pending_approvals",
    "last_seen_at",
    "updated_at",
)
_SESSION_ADVANCE_SQL = (
    f"UPDATE {AgentSession._meta.db_table} SET "  # noqa: S608
    + ", ".join(f"{n} = %s::jsonb" if n == "pending_approvals" else f"{n} = %s" for n in _ADVANCE_FIELDS)
    + " WHERE id = %s"
)


def _session_lock(session_id, client) -> _SessionHead | None:
    """Take the team's stream lock, then lock and read the session row (None: not this client's).

    On PostgreSQL both statements go in one round trip (the stream lock still first, before the
    transaction has an id), and the same query says whether the team streams to a SIEM at all.
    """
    if connection.vendor != "postgresql":
        stream_ingest_lock(client.team_id)
        session = (
            AgentSession.objects.select_for_update()
            .filter(pk=session_id, team_id=client.team_id, environment_id=client.environment_id)
            .first()
        )
        if session is None:
            return None
        return _SessionHead(
            session.pk,
            session.last_seq,
            session.last_hash,
            session.event_count,
            session.calls_total,
            session.calls_blocked,
            session.calls_failed,
            session.last_event_at,
            session.servers_used,
            session.triggers_seen,
            list(session.pending_approvals),
            True,
        )
    with connection.cursor() as cursor:
        cursor.execute(
            _SESSION_LOCK_SQL,
            [STREAM_LOCK_CLASS, client.team_id, session_id, client.team_id, client.environment_id],
        )
        cursor.cursor.nextset()
        row = cursor.fetchone()
    if row is None:
        return None
    pending = row[9]
    return _SessionHead(
        session_id, *row[:9], json.loads(pending) if isinstance(pending, str) else list(pending), row[10]
    )


def _session_advance(head: _SessionHead, **fields) -> None:
    """Write the new chain head and counters (one UPDATE statement)."""
    if connection.vendor != "postgresql":
        AgentSession.objects.filter(pk=head.pk).update(**fields)
        return
    fields["pending_approvals"] = encode_json(fields["pending_approvals"])
    with connection.cursor() as cursor:
        cursor.execute(_SESSION_ADVANCE_SQL, [*(fields[n] for n in _ADVANCE_FIELDS), head.pk])


def _tokens(existing: str, new: set[str]) -> str:
    have = set(existing.split())
    if new <= have:
        return existing
    return " " + " ".join(sorted(have | new)) + " "


def events_ingest(*, session_id, client, events: Any) -> IngestResult:
    """Store a gateway's batch for one of its sessions. Raises ServiceError (400/404/409/413)."""
    sid = str(session_id)
    validated = validate_batch(events, sid)
    with transaction.atomic():
        session = _session_lock(session_id, client)  # stream lock first: see streaming.py
        if session is None:
            raise NotFound("No such session for this enforcement client.")
        last_seq = session.last_seq
        if not validated:
            return IngestResult(accepted=0, duplicates=0, last_seq=last_seq)
        if validated[0].seq > last_seq + 1:
            raise Conflict(
                f"events[0].seq is {validated[0].seq} but the session's last stored seq is {last_seq}; "
                f"send from seq {last_seq + 1}.",
                ErrorCode.SEQUENCE_GAP,
                index=0,
                field="seq",
                last_seq=last_seq,
            )
        duplicates = [e for e in validated if e.seq <= last_seq]
        if duplicates:
            stored = {
                seq: (prev, digest)
                for seq, prev, digest in AuditEvent.objects.filter(
                    session_id=session.pk, seq__gte=duplicates[0].seq, seq__lte=duplicates[-1].seq
                ).values_list("seq", "prev_hash", "hash")
            }
            for index, e in enumerate(duplicates):
                prev, digest = stored.get(e.seq, ("", ""))
                if hashlib.sha256(prev.encode() + e.canonical).hexdigest() != digest:
                    raise Conflict(
                        f"events[{index}]: seq {e.seq} is already stored with different content.",
                        ErrorCode.SEQUENCE_CONFLICT,
                        index=index,
                        field="seq",
                        last_seq=last_seq,
                    )
        new = validated[len(duplicates) :]
        if not new:
            return IngestResult(accepted=0, duplicates=len(duplicates), last_seq=last_seq)
        prev = session.last_hash
        results = blocked = failed = 0
        servers: set[str] = set()
        triggers: set[str] = set()
        pending = list(session.pending_approvals)  # a copy: compared with the stored list below
        pending_ids = {p["call_id"] for p in pending}
        for e in new:
            e.prev_hash = prev
            e.hash = prev = hashlib.sha256(prev.encode() + e.canonical).hexdigest()
            servers.add(e.server)
            if e.trigger:
                triggers.add(e.trigger)
            if e.phase == Phase.RESULT:
                results += 1
                if e.status == CallStatus.BLOCKED:
                    blocked += 1
                elif e.status == CallStatus.FAIL:
                    failed += 1
                if e.call_id in pending_ids:
                    pending = [p for p in pending if p["call_id"] != e.call_id]
                    pending_ids.discard(e.call_id)
            elif e.trigger == Trigger.APPROVAL_REQUIRED and e.call_id not in pending_ids:
                pending.append(
                    {
                        "call_id": e.call_id,
                        "seq": e.seq,
                        "ts": format_ts(e.ts),
                        "server": e.server,
                        "tool": e.tool,
                        "args_summary": e.args_summary[:500],
                    }
                )
                pending_ids.add(e.call_id)
        received_at = timezone.now()
        if _use_copy():
            _copy_rows(session.pk, new, received_at)
        else:
            _insert_rows(session.pk, new, received_at)
        latest_ts = max(e.ts for e in new)
        seal_on_commit(team_id=client.team_id, only_if_due=True)  # sealing without beat, see sealing.py
        if session.has_sinks:
            stream_on_commit(team_id=client.team_id)  # SIEM sinks within seconds, see streaming.py
        _session_advance(
            session,
            last_seq=new[-1].seq,
            last_hash=prev,
            event_count=session.event_count + len(new),
            calls_total=session.calls_total + results,
            calls_blocked=session.calls_blocked + blocked,
            calls_failed=session.calls_failed + failed,
            last_event_at=latest_ts
            if session.last_event_at is None
            else max(latest_ts, session.last_event_at),
            servers_used=_tokens(session.servers_used, servers),
            triggers_seen=_tokens(session.triggers_seen, triggers),
            pending_approvals=pending,
            last_seen_at=received_at,
            updated_at=received_at,
        )
        if pending != session.pending_approvals:  # calls held for approval: tell who may decide
            full = AgentSession.objects.select_related("team", "environment").get(pk=session.pk)
            call_approvals_waiting(full, before=session.pending_approvals, after=pending)
    metrics.events_ingested(new, received_at)
    return IngestResult(accepted=len(new), duplicates=len(duplicates), last_seq=new[-1].seq)
