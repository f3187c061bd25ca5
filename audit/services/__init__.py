"""Audit writes: ingestion, sessions and decisions, review, sealing and exports (one rule, one place)."""

from audit.services.digests import audit_chains_seal, audit_verify
from audit.services.ingest import IngestResult, events_ingest
from audit.services.review import failed_call_explain, session_acknowledge, unexplained_failed_calls
from audit.services.sessions import (
    call_approval_decide,
    halting_flag_still_off,
    session_control,
    session_end,
    session_end_stale,
    session_open,
    session_release,
    session_report_state,
    sessions_halted_by_flag,
    sessions_resume_after_flag,
)

__all__ = [
    "IngestResult",
    "audit_chains_seal",
    "audit_verify",
    "call_approval_decide",
    "events_ingest",
    "failed_call_explain",
    "halting_flag_still_off",
    "session_acknowledge",
    "session_control",
    "session_end",
    "session_end_stale",
    "session_open",
    "session_release",
    "session_report_state",
    "sessions_halted_by_flag",
    "sessions_resume_after_flag",
    "unexplained_failed_calls",
]
