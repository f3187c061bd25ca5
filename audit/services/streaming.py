"""Audit streaming to a SIEM: per-team sinks (syslog, webhook / Splunk HEC) fed from a durable cursor.

Order and cursor. A team's events go out in `(xact, id)` order, where `xact` is the id of the
transaction that stored the event (PostgreSQL column default `pg_current_xact_id()`). The auto id
alone is not safe: two ingestion transactions take ids 100 and 101, 101 commits first, a delivery
sends it and moves the cursor past 100, and 100 — committed a moment later — is never sent. So a
delivery reads only events below a horizon that no later commit can undercut: every ingestion
transaction takes the team's stream lock in shared mode as its first statement
(`stream_ingest_lock`, before it has a transaction id); a delivery takes it exclusively for one
statement (waiting for the team's batches in flight, a few milliseconds), reads the next
transaction id to be assigned (`pg_snapshot_xmax`), and releases it. Every team event below that
horizon is committed; every later one gets a larger `xact`. (The cluster-wide `pg_snapshot_xmin`
would do without a lock, but any long transaction anywhere on the server would hold every sink
back.) Within a session the order is the chain order (ingestion locks the session row, so a later
batch has a later transaction). On SQLite writers are serialised, so the id order is the commit
order and `xact` is 0 throughout.

Delivery (`sink_deliver`): lock the sink row (SKIP LOCKED: a second run at the same time returns at
once), read the next batch after the cursor, send it, and move the cursor only after the receiver
accepted it (webhook: a 2xx answer; syslog: the server closed the connection after reading our end
of stream). A failure records the error and backs off exponentially (capped). At least once: a
receiver may see a batch again after a crash between its acceptance and our commit.

Secrets (webhook header value, HEC token) are Fernet tokens under MCPGOV_KEY_ENCRYPTION_KEY, the
key that protects the signing keys; they are never shown back. Argument and result payloads never
leave through a sink (they are auditors' only); summaries do.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count, Min, Q
from django.utils import timezone

from audit.choices import CallStatus, Phase, SinkFormat, SinkKind
from audit.exports import event_record
from audit.hashing import format_ts
from audit.models import AuditEvent, AuditSink
from audit.services.sinks import SYSLOG_APP, octet_frame, syslog_message, syslog_tcp_send
from governance.services.netguard import address_refusal
from governance.services.signing import _fernet as key_encryption  # one key-encryption key
from portal.choices import ChangeEventType
from portal.models import Team
from portal.permissions import MANAGE_CLIENTS, require_team_perm
from portal.services import change_record

logger = logging.getLogger(__name__)

EVENT_MSGID = "audit-event"
OCSF_VERSION = "1.3.0"
PRODUCT = {"name": "MCP Governance", "vendor_name": "mcpgov"}
# Facility local0; severity informational / notice / warning.
_SYSLOG_SEVERITY = {CallStatus.FAIL: 5, CallStatus.BLOCKED: 4}
_MAX_ID = 2**63 - 1
_NEXT_XACT_SQL = "SELECT (pg_snapshot_xmax(pg_current_snapshot())::text)::bigint"
STREAM_LOCK_CLASS = 0x6D637367  # pg advisory lock (class, team id) of a team's audit stream ("mcsg")


# Ingestion sends it in the same round trip as its session lock (audit/services/ingest.py), still
# as the transaction's first statement.
STREAM_INGEST_LOCK_SQL = "SELECT pg_advisory_xact_lock_shared(%s, %s)"


def stream_ingest_lock(team_id: int) -> None:
    """First statement of an ingestion transaction: the team's stream lock, shared (see above)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(STREAM_INGEST_LOCK_SQL, [STREAM_LOCK_CLASS, team_id])


def _horizon(team_id: int) -> int:
    """Every event of the team with xact below this is committed, and no later one will be."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", [STREAM_LOCK_CLASS, team_id])
        try:
            cursor.execute(_NEXT_XACT_SQL)
            return int(cursor.fetchone()[0])
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [STREAM_LOCK_CLASS, team_id])


class DeliveryError(Exception):
    """The receiver did not accept a batch (the cursor stays where it was)."""


# --- the order and the backlog ----------------------------------------------------------------------


def _after_cursor(sink: AuditSink):
    return AuditEvent.objects.filter(session__team_id=sink.team_id).filter(
        Q(xact__gt=sink.cursor_xact) | Q(xact=sink.cursor_xact, id__gt=sink.cursor_id)
    )


def _deliverable(sink: AuditSink):
    events = _after_cursor(sink)
    if connection.vendor == "postgresql":
        events = events.filter(xact__lt=_horizon(sink.team_id))
    return events.order_by("xact", "id")


def _start_cursor(team_id: int) -> tuple[int, int]:
    """The cursor of a sink that sends only events stored from now on."""
    if connection.vendor == "postgresql":
        return _horizon(team_id) - 1, _MAX_ID  # every later event has xact >= the horizon
    last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    return 0, last or 0


@dataclass(frozen=True)
class Backlog:
    events: int
    oldest_received_at: datetime | None

    @property
    def oldest_age_seconds(self) -> float:
        if self.oldest_received_at is None:
            return 0.0
        return max(0.0, (timezone.now() - self.oldest_received_at).total_seconds())


def sink_backlog(sink: AuditSink) -> Backlog:
    """Events stored but not yet accepted by the sink, and when the oldest of them arrived."""
    row = _after_cursor(sink).aggregate(n=Count("id"), oldest=Min("received_at"))
    return Backlog(events=row["n"], oldest_received_at=row["oldest"])


def sink_backlogs(*, team: Team | None = None) -> list[tuple[AuditSink, Backlog]]:
    """Every (enabled or not) sink with its backlog: for the pages, the API and a metrics gauge
    (`mcpgov_audit_sink_backlog_events{team, sink}` / `..._oldest_age_seconds`)."""
    sinks = AuditSink.objects.select_related("team").order_by("team_id", "name")
    if team is not None:
        sinks = sinks.filter(team=team)
    return [(sink, sink_backlog(sink)) for sink in sinks]


# --- formats ----------------------------------------------------------------------------------------


def event_id(event: AuditEvent) -> str:
    return f"{event.session_id}:{event.seq}"


def product_record(event: AuditEvent) -> dict[str, Any]:
    """The product's event JSON (the export's record, docs/audit.md) plus who and where."""
    session = event.session
    return {
        "event_id": event_id(event),
        "team": session.team.slug,
        "environment": session.environment.name,
        "role": session.role,
        "agent": session.agent,
        "client": session.client.name if session.client_id else None,
        **event_record(event, include_payloads=False),
        "received_at": format_ts(event.received_at),
    }


def _epoch_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def ocsf_record(event: AuditEvent) -> dict[str, Any]:
    """OCSF API Activity (class 6003): activity Other (99), the tool as api.operation."""
    session = event.session
    client = session.client.name if session.client_id else ""
    status = event.status
    if event.phase == Phase.INTENT:
        status_id, status_name = 0, "Unknown"
    elif status == CallStatus.SUCCESS:
        status_id, status_name = 1, "Success"
    else:
        status_id, status_name = 2, "Failure"
    severity_id = {CallStatus.FAIL: 3, CallStatus.BLOCKED: 4}.get(status, 1)
    record: dict[str, Any] = {
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": 99,
        "activity_name": f"tools/call {event.phase}",
        "type_uid": 600399,
        "type_name": "API Activity: Other",
        "severity_id": severity_id,
        "severity": {1: "Informational", 3: "Medium", 4: "High"}[severity_id],
        "status_id": status_id,
        "status": status_name,
        "time": _epoch_ms(event.ts),
        "actor": {
            "user": {"name": session.agent or "unknown", "uid": session.agent or "unknown", "type": "Agent"},
            "app_name": client,
            "session": {"uid": str(session.id)},
            "authorizations": [{"policy": {"name": session.role}}],
        },
        "api": {
            "operation": event.tool,
            "service": {"name": event.server},
            "request": {"uid": event.call_id},
            "response": {"message": event.result_summary} if event.phase == Phase.RESULT else {},
        },
        "src_endpoint": {"name": client or "gateway"},
        "cloud": {"provider": "mcpgov"},
        "metadata": {
            "uid": event_id(event),
            "correlation_uid": event.call_id,
            "version": OCSF_VERSION,
            "product": PRODUCT,
            "tenant_uid": session.team.slug,
            "logged_time": _epoch_ms(event.received_at),
            "sequence": event.seq,
        },
        "unmapped": {
            "phase": event.phase,
            "environment": session.environment.name,
            "role": session.role,
            "args_summary": event.args_summary,
            "trigger": event.trigger,
            "bytes": event.bytes,
            "bundle_version": event.bundle_version,
            "prev_hash": event.prev_hash,
            "hash": event.hash,
        },
    }
    if status in (CallStatus.FAIL, CallStatus.BLOCKED):
        record["status_detail"] = f"{status}: {event.trigger}" if event.trigger else status
    if event.duration_ms is not None:
        record["duration"] = round(event.duration_ms)
    return record


def sink_record(sink: AuditSink, event: AuditEvent) -> dict[str, Any]:
    return ocsf_record(event) if sink.format == SinkFormat.OCSF else product_record(event)


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


# --- transports -------------------------------------------------------------------------------------


def _allowed_networks() -> list:
    return [
        ipaddress.ip_network(str(n).strip(), strict=False)
        for n in getattr(settings, "MCPGOV_SINK_ALLOWED_NETWORKS", [])
    ]


def _resolve(host: str, port: int) -> str:
    """The address to connect to, after the SSRF guard (governance/services/netguard.py)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DeliveryError(f"Cannot resolve {host}: {exc}") from exc
    allowed = _allowed_networks()
    addresses = []
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        reason = address_refusal(addr, allowed)
        if reason is not None:
            raise DeliveryError(
                f"The portal does not connect to {host} ({addr}): {reason}. "
                "Ask the operator to allow its network (MCPGOV_SINK_ALLOWED_NETWORKS)."
            )
        addresses.append(str(addr))
    if not addresses:
        raise DeliveryError(f"{host} resolves to no address.")
    return addresses[0]


def _tls_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _timeout() -> float:
    return float(getattr(settings, "MCPGOV_SINK_TIMEOUT_SECONDS", 10))


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host, port, address, **kwargs):
        super().__init__(host, port, **kwargs)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host, port, address, **kwargs):
        super().__init__(host, port, **kwargs)
        self._address = address

    def connect(self):
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def _send_syslog(sink: AuditSink, events: list[AuditEvent], records: list[dict]) -> None:
    frames = b"".join(
        octet_frame(
            syslog_message(
                _dumps(record),
                msgid=EVENT_MSGID,
                pri=16 * 8 + _SYSLOG_SEVERITY.get(event.status, 6),
                ts=event.ts,
            )
        )
        for event, record in zip(events, records, strict=True)
    )
    address = _resolve(sink.host, sink.port)
    context = _tls_context(sink.ca_file) if sink.tls else None
    try:
        syslog_tcp_send(
            sink.host, sink.port, frames, address=address, ssl_context=context, timeout=_timeout()
        )
    except OSError as exc:
        raise DeliveryError(f"syslog {sink.host}:{sink.port}: {exc}") from exc


def _secret(sink: AuditSink) -> str:
    if not sink.secret_encrypted:
        return ""
    try:
        return key_encryption().decrypt(sink.secret_encrypted.encode("ascii")).decode("utf-8")
    except InvalidToken as exc:
        raise DeliveryError("The sink's secret cannot be decrypted with MCPGOV_KEY_ENCRYPTION_KEY.") from exc


def _hec_body(sink: AuditSink, events: list[AuditEvent], records: list[dict]) -> bytes:
    sourcetype = "ocsf:api_activity" if sink.format == SinkFormat.OCSF else "mcpgov:audit"
    host = socket.gethostname() or "mcpgov"
    return b"\n".join(
        _dumps(
            {
                "time": round(event.ts.timestamp(), 6),
                "host": host,
                "source": SYSLOG_APP,
                "sourcetype": sourcetype,
                "event": record,
            }
        )
        for event, record in zip(events, records, strict=True)
    )


def _send_webhook(sink: AuditSink, events: list[AuditEvent], records: list[dict]) -> None:
    parts = urlsplit(sink.url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    address = _resolve(host, port)
    headers = {"Content-Type": "application/json", "User-Agent": "mcpgov-audit-sink"}
    secret = _secret(sink)
    if sink.hec:
        body = _hec_body(sink, events, records)
        if secret:
            headers["Authorization"] = f"Splunk {secret}"
    else:
        body = b"[" + b",".join(_dumps(r) for r in records) + b"]"
        if secret and sink.secret_header:
            headers[sink.secret_header] = secret
    if https:
        conn = _PinnedHTTPSConnection(
            host, port, address, timeout=_timeout(), context=_tls_context(sink.ca_file)
        )
    else:
        conn = _PinnedHTTPConnection(host, port, address, timeout=_timeout())
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read(4096)
    except OSError as exc:
        raise DeliveryError(f"webhook {host}:{port}: {exc}") from exc
    finally:
        conn.close()
    if not 200 <= response.status < 300:
        text = answer.decode("utf-8", "replace")[:200]
        raise DeliveryError(f"webhook answered {response.status}: {text}")
    if sink.hec:
        try:
            code = json.loads(answer or b"{}").get("code", 0)
        except (ValueError, AttributeError):
            code = 0
        if code not in (0, None):
            raise DeliveryError(f"HEC refused the batch: {answer.decode('utf-8', 'replace')[:200]}")


def _send(sink: AuditSink, events: list[AuditEvent]) -> None:
    records = [sink_record(sink, event) for event in events]
    if sink.kind == SinkKind.SYSLOG:
        _send_syslog(sink, events, records)
    else:
        _send_webhook(sink, events, records)


# --- delivery ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryResult:
    delivered: int
    outcome: str  # caught_up | more | failed | backing_off | busy | disabled
    error: str = ""


def _backoff(failures: int) -> timedelta:
    base = float(getattr(settings, "MCPGOV_SINK_BACKOFF_SECONDS", 2))
    cap = float(getattr(settings, "MCPGOV_SINK_BACKOFF_MAX_SECONDS", 60))
    return timedelta(seconds=min(cap, base * 2 ** max(0, failures - 1)))


def sink_deliver(*, sink_id: int, max_batches: int | None = None) -> DeliveryResult:
    """Send the sink's next batches after its cursor, in order; safe to run twice at once."""
    batch_size = int(getattr(settings, "MCPGOV_SINK_BATCH_SIZE", 500))
    max_batches = max_batches or int(getattr(settings, "MCPGOV_SINK_MAX_BATCHES_PER_RUN", 20))
    delivered = 0
    for _ in range(max_batches):
        with transaction.atomic():
            sink = AuditSink.objects.select_for_update(skip_locked=True).filter(pk=sink_id).first()
            if sink is None:
                exists = AuditSink.objects.filter(pk=sink_id).exists()
                return DeliveryResult(delivered, "busy" if exists else "disabled")
            if not sink.enabled:
                return DeliveryResult(delivered, "disabled")
            now = timezone.now()
            if sink.next_attempt_at is not None and sink.next_attempt_at > now:
                return DeliveryResult(delivered, "backing_off")
            events = list(
                _deliverable(sink).select_related("session__team", "session__environment", "session__client")[
                    :batch_size
                ]
            )
            if not events:
                return DeliveryResult(delivered, "caught_up")
            try:
                _send(sink, events)
            except DeliveryError as exc:
                sink.failures += 1
                sink.last_error = str(exc)[:1000]
                sink.last_error_at = now
                sink.next_attempt_at = now + _backoff(sink.failures)
                sink.save(
                    update_fields=["failures", "last_error", "last_error_at", "next_attempt_at", "updated_at"]
                )
                logger.warning("Audit sink %s (%s): %s; retrying later.", sink.pk, sink.name, exc)
                return DeliveryResult(delivered, "failed", str(exc))
            last = events[-1]
            sink.cursor_xact, sink.cursor_id = last.xact, last.id
            sink.delivered_count += len(events)
            sink.last_delivered_at = timezone.now()
            sink.failures = 0
            sink.next_attempt_at = None
            sink.save(
                update_fields=[
                    "cursor_xact",
                    "cursor_id",
                    "delivered_count",
                    "last_delivered_at",
                    "failures",
                    "next_attempt_at",
                    "updated_at",
                ]
            )
            delivered += len(events)
            if len(events) < batch_size:
                return DeliveryResult(delivered, "caught_up")
    return DeliveryResult(delivered, "more")


def sink_test_send(*, sink: AuditSink, actor) -> str:
    """Send one synthetic event (not from the trail, the cursor stays); returns "" or the error."""
    require_team_perm(actor, MANAGE_CLIENTS, sink.team)
    from audit.models import AgentSession

    session = AgentSession(
        id="00000000-0000-4000-8000-000000000000",
        team=sink.team,
        role="test",
        agent="mcpgov-test-send",
        started_at=timezone.now(),
    )
    session.environment = sink.team.environments.first()
    if session.environment is None:
        from governance.models import Environment

        session.environment = Environment(name="test", team=sink.team)
    now = timezone.now()
    event = AuditEvent(
        id=0,
        session=session,
        seq=0,
        call_id="test-send",
        phase=Phase.RESULT,
        ts=now,
        server="mcpgov",
        tool="test_send",
        status=CallStatus.SUCCESS,
        result_summary="Test event from the portal",
        prev_hash="0" * 64,
        hash="0" * 64,
        received_at=now,
    )
    try:
        _send(sink, [event])
    except DeliveryError as exc:
        return str(exc)
    return ""


def stream_on_commit(*, team_id: int) -> None:
    """After the current transaction commits, kick the delivery of the team's enabled sinks."""
    transaction.on_commit(lambda: _kick(team_id))


def _kick(team_id: int) -> None:
    from audit.tasks import deliver_audit_sink

    try:
        due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now())
        ids = list(AuditSink.objects.filter(due, team_id=team_id, enabled=True).values_list("pk", flat=True))
        # Eager Celery (no broker, `make run`) delivers inside the ingestion request: one batch each.
        bound = 1 if settings.CELERY_TASK_ALWAYS_EAGER else None
        for pk in ids:
            deliver_audit_sink.delay(pk, bound)
    except Exception:  # the events are committed; beat or the next batch delivers them
        logger.exception("Kicking the audit sinks of team %s failed; the next run delivers.", team_id)


# --- writes by people -------------------------------------------------------------------------------

_FIELDS = (
    "name",
    "kind",
    "format",
    "enabled",
    "host",
    "port",
    "tls",
    "ca_file",
    "url",
    "hec",
    "secret_header",
)


def _validate(sink: AuditSink) -> None:
    errors: dict[str, str] = {}
    if sink.kind == SinkKind.SYSLOG:
        if not sink.host:
            errors["host"] = "A syslog sink needs a host."
        if not sink.port or not 0 < sink.port < 65536:
            errors["port"] = "A syslog sink needs a port between 1 and 65535."
        sink.url, sink.hec = "", False
    elif sink.kind == SinkKind.WEBHOOK:
        parts = urlsplit(sink.url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            errors["url"] = "A webhook sink needs an http:// or https:// URL."
        sink.host, sink.port, sink.tls = "", None, False
    else:
        errors["kind"] = "Choose syslog or webhook."
    if sink.format not in SinkFormat.values:
        errors["format"] = "Choose json or ocsf."
    if sink.ca_file and not sink.ca_file.startswith("/"):
        errors["ca_file"] = "An absolute path on the portal host."
    if sink.secret_header and not all(c.isalnum() or c == "-" for c in sink.secret_header):
        errors["secret_header"] = "A header name (letters, digits and dashes)."  # noqa: S105
    name_taken = AuditSink.objects.filter(team_id=sink.team_id, name=sink.name).exclude(pk=sink.pk).exists()
    if not sink.name:
        errors["name"] = "A name is required."
    elif name_taken:
        errors["name"] = "This team has a sink with this name."
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def sink_create(*, team: Team, actor, secret: str = "", from_start: bool = False, **fields) -> AuditSink:
    """A new sink; it sends events stored from now on (or the team's whole trail with from_start)."""
    require_team_perm(actor, MANAGE_CLIENTS, team)
    sink = AuditSink(team=team, **{k: v for k, v in fields.items() if k in _FIELDS})
    _validate(sink)
    if secret:
        sink.secret_encrypted = key_encryption().encrypt(secret.encode("utf-8")).decode("ascii")
    sink.cursor_xact, sink.cursor_id = (-1, 0) if from_start else _start_cursor(team.pk)
    sink.save()
    change_record(
        team=team,
        actor=actor,
        event_type=ChangeEventType.SINK_CREATED,
        obj=sink,
        summary=f"Audit sink {sink.name} created: {sink.target}, {sink.format}"
        + (", from the start of the trail" if from_start else ""),
    )
    return sink


@transaction.atomic
def sink_update(
    *, sink: AuditSink, actor, secret: str | None = None, clear_secret: bool = False, **fields
) -> AuditSink:
    """Change a sink's target, format or state; the cursor stays (nothing is skipped or resent)."""
    require_team_perm(actor, MANAGE_CLIENTS, sink.team)
    sink = AuditSink.objects.select_for_update().get(pk=sink.pk)
    before = {k: getattr(sink, k) for k in _FIELDS}
    for key, value in fields.items():
        if key in _FIELDS:
            setattr(sink, key, value)
    _validate(sink)
    changes = {k: [before[k], getattr(sink, k)] for k in _FIELDS if before[k] != getattr(sink, k)}
    if clear_secret and sink.secret_encrypted:
        sink.secret_encrypted = ""
        changes["secret"] = ["(set)", "(none)"]
    elif secret:
        sink.secret_encrypted = key_encryption().encrypt(secret.encode("utf-8")).decode("ascii")
        changes["secret"] = ["(hidden)", "(replaced)"]
    if "enabled" in changes and sink.enabled:
        sink.failures, sink.next_attempt_at = 0, None  # re-enabled: try at once
    sink.save()
    if changes:
        change_record(
            team=sink.team,
            actor=actor,
            event_type=ChangeEventType.SINK_UPDATED,
            obj=sink,
            summary=f"Audit sink {sink.name} changed: {', '.join(sorted(changes))}",
            changes=changes,
        )
    if sink.enabled:
        stream_on_commit(team_id=sink.team_id)
    return sink


@transaction.atomic
def sink_delete(*, sink: AuditSink, actor) -> None:
    require_team_perm(actor, MANAGE_CLIENTS, sink.team)
    change_record(
        team=sink.team,
        actor=actor,
        event_type=ChangeEventType.SINK_DELETED,
        obj=sink,
        summary=f"Audit sink {sink.name} deleted",
    )
    sink.delete()


__all__ = [
    "Backlog",
    "DeliveryError",
    "DeliveryResult",
    "ocsf_record",
    "product_record",
    "sink_backlog",
    "sink_backlogs",
    "sink_create",
    "sink_delete",
    "sink_deliver",
    "sink_test_send",
    "sink_update",
    "stream_ingest_lock",
    "stream_on_commit",
]
