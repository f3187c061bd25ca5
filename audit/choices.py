"""Enumerations and error codes of the audit app (stored values are the wire vocabulary)."""

from django.db import models


class SessionState(models.TextChoices):
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"
    HALTED = "halted", "Halted"
    ENDED = "ended", "Ended"


# States a person must decide on before the gateway may go on.
WAITING_STATES = (SessionState.HALTED, SessionState.PAUSED)


class Phase(models.TextChoices):
    INTENT = "intent", "Intent"
    RESULT = "result", "Result"


class CallStatus(models.TextChoices):
    SUCCESS = "success", "Success"
    FAIL = "fail", "Failed"
    BLOCKED = "blocked", "Blocked"


class Trigger(models.TextChoices):
    UNAUTHORIZED_SERVER = "unauthorized_server", "Unauthorized server"
    WRITE_IN_READ_SESSION = "write_in_read_session", "Write in a read-only session"
    PRODUCTION_ENVIRONMENT = "production_environment", "Production environment detected"
    RATE_LIMIT = "rate_limit", "Rate limit hit"
    LARGE_DATA_RETURN = "large_data_return", "Large data return"
    CASCADE_WRITE_CHAIN = "cascade_write_chain", "Cascade write chain"
    KILL_SWITCH_FLAG = "kill_switch_flag", "Kill-switch flag"
    BUNDLE_EXPIRED = "bundle_expired", "Bundle expired"
    APPROVAL_REQUIRED = "approval_required", "Approval required"
    TOOL_DEFINITION_CHANGED = "tool_definition_changed", "Tool definition changed"
    SESSION_HALTED = "session_halted", "Session halted"


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


MAX_BATCH = 1000
GENESIS_HASH = "0" * 64
