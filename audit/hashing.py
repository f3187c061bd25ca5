"""The audit hash chain: canonical JSON of a stored event and its chained sha256 (docs/audit.md).

    hash = sha256_hex( prev_hash_hex + canonical_json(event) )      (UTF-8, prev of seq 1 = 64 zeros)

`canonical_json` is the project's one canonical encoding (mcpgov.bundle.canonical_json: keys
sorted, no whitespace, UTF-8, NaN refused). The event object is built here by concatenation
in sorted-key order from pieces that are themselves canonical; a test proves it equals
`canonical_json` of the same dict. Ingestion and `verify_audit` both call `event_canonical`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from portal.parsers import json_loads

_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _not_json(value: Any):
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


# JSONEncoder.encode builds a new C encoder on every call; ingestion encodes two values per event,
# so the same C encoder (same settings as `_encode`: sorted keys, no whitespace, UTF-8, NaN
# refused) is built once. No circular-reference markers: what is encoded here was parsed from JSON
# or read from jsonb, so it cannot hold a cycle.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
if _c_make_encoder is not None:
    _c_encode = _c_make_encoder(
        None, _not_json, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )

    def _encode(value: Any, _join="".join) -> str:  # the C encoder when there is one
        return _join(_c_encode(value, 0))


# What _encode does for a str, without the encoder's dispatch (the C function when available).
_encode_str = json.encoder.encode_basestring

# The hashed event object's fields are in canonical (sorted) order; `trace_id` is hashed only when
# the event has one: events without a trace id, all those stored before the field existed among
# them, hash exactly as before (docs/audit.md, "The hash chain"). `shadow` (a shadow bundle's verdict)
# likewise.

_NULL = "null"


def encode_json(value: Any) -> str:
    """Canonical JSON text of `value` (str)."""
    return _encode(value)


def parse_float(text: str) -> float | int:
    """json.loads hook: floats as PostgreSQL jsonb will give them back, so hashes stay reproducible.

    jsonb stores numbers as `numeric`: a float whose shortest repr has a positive exponent
    (|x| >= 1e16) comes back as an integer, and -0.0 as 0.0. Both are normalised on the way in.
    """
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("NaN and Infinity are not JSON")
    if value == 0.0:
        return 0.0
    if abs(value) >= 1e16:
        return int(Decimal(repr(value)))
    return value


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def loads(data: bytes | str) -> Any:
    """json.loads with the audit number rules (see parse_float); NaN/Infinity refused."""
    return json_loads(data, parse_float=parse_float, parse_constant=_reject_constant)


def format_ts(value: datetime) -> str:
    """RFC 3339 UTC with exactly six fractional digits: 2026-11-24T09:00:00.123000Z."""
    if value.utcoffset():
        value = value.astimezone(UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
        f"{value.second:02d}.{value.microsecond:06d}Z"
    )


def event_canonical(
    *,
    session: str,
    seq: int,
    call_id: str,
    phase: str,
    ts: str,
    server: str,
    tool: str,
    arguments_json: str,
    args_summary: str,
    status: str | None,
    result_summary: str,
    bytes_: int | None,
    duration_ms: float | None,
    trigger: str | None,
    bundle_version: int | None,
    result_json: str,
    trace_id: str | None = None,
    shadow: dict[str, Any] | None = None,
) -> str:
    """Canonical JSON of one event. `arguments_json`/`result_json` are already canonical JSON text.

    `trace_id` (32 lowercase hex digits) is part of the object only when set.
    """
    # One f-string (a single BUILD_STRING) rather than ~35 concatenations: this runs once per
    # ingested event.
    e = _encode_str
    shadow_part = "" if shadow is None else ',"shadow":' + _encode(shadow)
    trace_part = ',"trace_id":"' + trace_id + '"' if trace_id else ""
    return (
        f'{{"args_summary":{e(args_summary)},"arguments":{arguments_json},'
        f'"bundle_version":{_NULL if bundle_version is None else bundle_version},'
        f'"bytes":{_NULL if bytes_ is None else bytes_},"call_id":{e(call_id)},'
        f'"duration_ms":{_NULL if duration_ms is None else repr(float(duration_ms))},'
        f'"phase":{e(phase)},"result":{result_json},"result_summary":{e(result_summary)},'
        f'"seq":{seq},"server":{e(server)},"session":"{session}"{shadow_part}'
        f',"status":{_NULL if status is None else e(status)},"tool":{e(tool)}{trace_part}'
        f',"trigger":{_NULL if trigger is None else e(trigger)},"ts":"{ts}"}}'
    )


def chain_hash(prev_hash: str, canonical: str) -> str:
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def stored_event_canonical(event, *, seq: int | None = None) -> str:
    """Canonical JSON of an AuditEvent row (or any object with the same attributes), as stored.

    `seq` replaces the stored seq (verify_audit uses it to recognise renumbered events).
    """
    return event_canonical(
        session=str(event.session_id),
        seq=event.seq if seq is None else seq,
        call_id=event.call_id,
        phase=event.phase,
        ts=format_ts(event.ts),
        server=event.server,
        tool=event.tool,
        arguments_json=_encode(event.arguments),
        args_summary=event.args_summary,
        status=event.status,
        result_summary=event.result_summary,
        bytes_=event.bytes,
        duration_ms=event.duration_ms,
        trigger=event.trigger,
        bundle_version=event.bundle_version,
        result_json=_encode(event.result),
        trace_id=event.trace_id or None,
        shadow=event.shadow,
    )
