"""Enumerations and error codes of the audit app (stored values are the wire vocabulary)."""

from django.db import models

from mcpgov import bundle as mcpgov_bundle


class SessionState(models.TextChoices):
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"
    HALTED = "halted", "Halted"
    ENDED = "ended", "Ended"
    # Opened already refused: the gateway's environment gate turned the start down (the gate report says why).
    REFUSED = "refused", "Refused at the gate"


# States a person must decide on before the gateway may go on.
WAITING_STATES = (SessionState.HALTED, SessionState.PAUSED)


class Phase(models.TextChoices):
    INTENT = "intent", "Intent"
    RESULT = "result", "Result"


class CallStatus(models.TextChoices):
    SUCCESS = "success", "Success"
    FAIL = "fail", "Failed"
    BLOCKED = "blocked", "Blocked"


# The trigger codes are the enforcer's (mcpgov.bundle.Trigger); only their labels are the portal's.
_TRIGGER_LABELS = {
    mcpgov_bundle.Trigger.UNAUTHORIZED_SERVER: "Unauthorized server",
    mcpgov_bundle.Trigger.WRITE_IN_READ_SESSION: "Write in a read-only session",
    mcpgov_bundle.Trigger.PRODUCTION_ENVIRONMENT: "Production environment detected",
    mcpgov_bundle.Trigger.RATE_LIMIT: "Rate limit hit",
    mcpgov_bundle.Trigger.LARGE_DATA_RETURN: "Large data return",
    mcpgov_bundle.Trigger.CASCADE_WRITE_CHAIN: "Cascade write chain",
    mcpgov_bundle.Trigger.KILL_SWITCH_FLAG: "Kill-switch flag",
    mcpgov_bundle.Trigger.BUNDLE_EXPIRED: "Bundle expired",
    mcpgov_bundle.Trigger.APPROVAL_REQUIRED: "Approval required",
    mcpgov_bundle.Trigger.TOOL_DEFINITION_CHANGED: "Tool definition changed",
    mcpgov_bundle.Trigger.SESSION_HALTED: "Session halted",
    mcpgov_bundle.Trigger.UNKNOWN_TOOL: "Unknown tool",
    mcpgov_bundle.Trigger.SERVER_REQUEST_DENIED: "Server request denied",
}
Trigger = models.TextChoices(
    "Trigger", [(t.name, (t.value, _TRIGGER_LABELS[t])) for t in mcpgov_bundle.Trigger], module=__name__
)


class DecisionKind(models.TextChoices):
    RELEASE = "release", "Allowed to continue"
    END = "end", "Ended"
    APPROVE = "approve", "Call approved"
    DENY = "deny", "Call denied"


CALL_DECISIONS = (DecisionKind.APPROVE, DecisionKind.DENY)


class ExportFormat(models.TextChoices):
    JSONL = "jsonl", "JSON Lines"
    CSV = "csv", "CSV"
    MCP_AUDIT = "mcp_audit", "MCP_AUDIT log lines"


class ErrorCode(models.TextChoices):
    """Machine codes in API error bodies (`{"detail", "code"}`) and service errors."""

    INVALID = "invalid", "Invalid request"
    UNKNOWN_ROLE = "unknown_role", "The team has no such role"
    ROLE_NOT_ALLOWED = "role_not_allowed", "The credential may not use this role"
    UNKNOWN_AGENT = "unknown_agent", "No such live agent in the team"
    CLIENT_REVOKED = "client_revoked", "The enforcement client is revoked"
    NOT_FOUND = "not_found", "Not found"
    NEEDS_RELEASE = "needs_release", "Only a person can release a halted or paused session"
    SESSION_ENDED = "session_ended", "The session has ended"
    SESSION_CONFLICT = "session_conflict", "A session with this id exists with other attributes"
    SEQUENCE_GAP = "sequence_gap", "Events must continue the stored sequence"
    SEQUENCE_CONFLICT = "sequence_conflict", "An event with this seq is stored with other content"
    BATCH_TOO_LARGE = "batch_too_large", "More than 1,000 events in one batch"
    ALREADY_ACKNOWLEDGED = "already_acknowledged", "The session is acknowledged and read-only"
    NOT_ENDED = "not_ended", "The session has not ended"
    UNEXPLAINED_FAILURES = "unexplained_failures", "Failed calls need an explanation first"
    NOT_A_FAILED_CALL = "not_a_failed_call", "No failed call with this call_id"
    NOT_WAITING = "not_waiting", "The session is not halted or paused"
    NO_PENDING_APPROVAL = "no_pending_approval", "No call waits for approval with this call_id"
    REASON_REQUIRED = "reason_required", "A reason is required"
    FLAG_STILL_OFF = "flag_still_off", "The flag that halted the session is still off"


MAX_BATCH = 1000
GENESIS_HASH = "0" * 64


class SinkKind(models.TextChoices):
    """Where a team's audit stream goes (audit/services/streaming.py)."""

    SYSLOG = "syslog", "Syslog (RFC 5424 over TCP)"
    WEBHOOK = "webhook", "HTTP webhook"


class SinkFormat(models.TextChoices):
    JSON = "json", "Product JSON (docs/audit.md)"
    OCSF = "ocsf", "OCSF API Activity (6003)"


# Why the portal ended a session on its own (history reason and state_reason).
STALE_END_REASON = "ended: gateway stopped reporting"
# The timeline's status of an INTENT left without a RESULT when its session was stale-ended.
OUTCOME_UNKNOWN = "unknown"


class ReviewStatus(models.TextChoices):
    OPEN = "open", "Open"
    SIGNED_OFF = "signed_off", "Signed off"


class SuggestionKind(models.TextChoices):
    """What the quarterly review (Layer 7) suggests, each from the audit data of the period."""

    SERVER_UNUSED = "server_unused", "Allowlisted server nobody called"
    ROLE_UNUSED_SERVER = "role_unused_server", "Role with a server it never called"
    WRITE_UNUSED = "write_unused", "Write binding never used to write"
    INCIDENT_SERVER = "incident_server", "Server involved in an incident"
    TOOL_UNCLASSIFIED = "tool_unclassified", "Tool pending classification"


class SuggestionStatus(models.TextChoices):
    OPEN = "open", "Open"
    ACCEPTED = "accepted", "Accepted into the draft"
    DISMISSED = "dismissed", "Dismissed"
