"""Audit exports: JSON Lines, CSV and the seed's `MCP_AUDIT | …` log lines.

Argument and result payloads are written only when `include_payloads` is true (auditors, and
the server-side archive); everyone else gets the summaries.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from audit.choices import ExportFormat, Phase
from audit.hashing import format_ts
from audit.models import EVENT_WIRE_FIELDS, AuditEvent

CONTENT_TYPES = {
    ExportFormat.JSONL: "application/x-ndjson; charset=utf-8",
    ExportFormat.CSV: "text/csv; charset=utf-8",
    ExportFormat.MCP_AUDIT: "text/plain; charset=utf-8",
}
EXTENSIONS = {ExportFormat.JSONL: "jsonl", ExportFormat.CSV: "csv", ExportFormat.MCP_AUDIT: "log"}

PAYLOAD_COLUMNS = ("arguments", "result")
# Every recorded field but the payloads and the optional trace id and shadow verdict, with the
# session and the chain (the two optional ones are in JSONL only, when present).
SUMMARY_COLUMNS = (
    "session",
    *(f for f in EVENT_WIRE_FIELDS if f not in (*PAYLOAD_COLUMNS, "trace_id", "shadow")),
    "prev_hash",
    "hash",
)


def event_record(event: AuditEvent, *, include_payloads: bool) -> dict[str, Any]:
    record: dict[str, Any] = {
        "session": str(event.session_id),
        "seq": event.seq,
        "call_id": event.call_id,
        "phase": event.phase,
        "ts": format_ts(event.ts),
        "server": event.server,
        "tool": event.tool,
        "args_summary": event.args_summary,
        "status": event.status,
        "result_summary": event.result_summary,
        "bytes": event.bytes,
        "duration_ms": event.duration_ms,
        "trigger": event.trigger,
        "bundle_version": event.bundle_version,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }
    if event.trace_id:  # hashed when present (docs/audit.md)
        record["trace_id"] = event.trace_id
    if event.shadow is not None:  # likewise
        record["shadow"] = event.shadow
    if include_payloads:
        record["arguments"] = event.arguments
        record["result"] = event.result
    return record


def _jsonl(events: Iterable[AuditEvent], include_payloads: bool) -> Iterator[str]:
    for event in events:
        yield json.dumps(event_record(event, include_payloads=include_payloads), ensure_ascii=False) + "\n"


def _csv(events: Iterable[AuditEvent], include_payloads: bool) -> Iterator[str]:
    columns = SUMMARY_COLUMNS + (PAYLOAD_COLUMNS if include_payloads else ())
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(columns)
    yield flush()
    for event in events:
        record = event_record(event, include_payloads=include_payloads)
        row = []
        for column in columns:
            value = record[column]
            if column in PAYLOAD_COLUMNS:
                value = "" if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)
            row.append("" if value is None else value)
        writer.writerow(row)
        yield flush()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _args_text(event: AuditEvent | None, include_payloads: bool) -> str:
    if event is None:
        return "{}"
    if include_payloads and isinstance(event.arguments, dict):
        inner = ", ".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in event.arguments.items())
        return "{" + _one_line(inner) + "}"
    return "{" + _one_line(event.args_summary) + "}"


def _ts_text(event: AuditEvent) -> str:
    ts = format_ts(event.ts)  # …SS.ffffffZ
    return ts[:19] + "Z" if ts[20:26] == "000000" else ts[:23] + "Z"


def _duration_text(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def mcp_audit_line(intent: AuditEvent | None, result: AuditEvent | None, *, include_payloads: bool) -> str:
    """`MCP_AUDIT | ts | session=… | server=… | tool=… | args={…} | result=… | duration_ms=… | status=…`."""
    first = intent or result
    args_source = intent if intent is not None else result
    if result is not None:
        result_text = _one_line(result.result_summary) or "-"
        if include_payloads and result.result is not None and not result.result_summary:
            result_text = _one_line(json.dumps(result.result, ensure_ascii=False))
        status = result.status
        duration = _duration_text(result.duration_ms)
    else:
        result_text, status, duration = "(no result)", "pending", "-"
    return (
        f"MCP_AUDIT | {_ts_text(first)} | session={first.session_id} | server={first.server} | tool={first.tool} | "
        f"args={_args_text(args_source, include_payloads)} | result={result_text} | duration_ms={duration} | "
        f"status={status}\n"
    )


def _mcp_audit(events: Iterable[AuditEvent], include_payloads: bool) -> Iterator[str]:
    """One line per call, in the order calls finish; calls with no RESULT last, as pending."""
    open_intents: dict[tuple[str, str], AuditEvent] = {}
    current_session = None
    for event in events:
        if event.session_id != current_session:
            for intent in open_intents.values():
                yield mcp_audit_line(intent, None, include_payloads=include_payloads)
            open_intents.clear()
            current_session = event.session_id
        key = (str(event.session_id), event.call_id)
        if event.phase == Phase.INTENT:
            open_intents[key] = event
        else:
            yield mcp_audit_line(open_intents.pop(key, None), event, include_payloads=include_payloads)
    for intent in open_intents.values():
        yield mcp_audit_line(intent, None, include_payloads=include_payloads)


def export_chunks(events: Iterable[AuditEvent], fmt: str, *, include_payloads: bool) -> Iterator[str]:
    if fmt == ExportFormat.JSONL:
        return _jsonl(events, include_payloads)
    if fmt == ExportFormat.CSV:
        return _csv(events, include_payloads)
    if fmt == ExportFormat.MCP_AUDIT:
        return _mcp_audit(events, include_payloads)
    raise ValueError(f"Unknown export format {fmt!r}.")
