"""Reviewers' sign-off: explanations of failed calls and the acknowledgement of a session's log.

Rules (the form, the page and the API all come here):
- only a member with `acknowledge_session` explains or acknowledges;
- a session is acknowledged once it has ended, once only, and is read-only afterwards;
- every failed call (a RESULT with status `fail`) needs an explanation first.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from audit.choices import CallStatus, ErrorCode, Phase, SessionState
from audit.models import Acknowledgement, AgentSession, AuditEvent, FailedCallExplanation
from portal.choices import ChangeEventType
from portal.errors import Conflict, ServiceError
from portal.permissions import ACKNOWLEDGE_SESSION, require_team_perm
from portal.services import change_record


class UnexplainedFailures(Conflict):
    """The page names the calls to explain; the API lists them in `call_ids`."""

    def page_message(self) -> str:
        return f"{self.message} Unexplained: {', '.join(self.extra['call_ids'])}."


def failed_call_ids(session: AgentSession) -> list[str]:
    """call_ids of the session's failed calls, in order."""
    rows = (
        AuditEvent.objects.filter(session=session, phase=Phase.RESULT, status=CallStatus.FAIL)
        .order_by("seq")
        .values_list("call_id", flat=True)
    )
    return list(dict.fromkeys(rows))


def unexplained_failed_calls(session: AgentSession) -> list[str]:
    explained = set(FailedCallExplanation.objects.filter(session=session).values_list("call_id", flat=True))
    return [c for c in failed_call_ids(session) if c not in explained]


def _lock_unacknowledged(session: AgentSession) -> AgentSession:
    session = AgentSession.objects.select_for_update().get(pk=session.pk)
    if Acknowledgement.objects.filter(session=session).exists():
        raise Conflict(
            "This session is acknowledged; its review is read-only.", ErrorCode.ALREADY_ACKNOWLEDGED
        )
    return session


@transaction.atomic
def failed_call_explain(
    *, session: AgentSession, reviewer, call_id: str, explanation: str
) -> FailedCallExplanation:
    """Say what a failed call attempted and why it failed (replaces an earlier explanation)."""
    require_team_perm(reviewer, ACKNOWLEDGE_SESSION, session.team)
    explanation = (explanation or "").strip()
    if not explanation:
        raise ServiceError("explanation: say what the call attempted and why it failed.", field="explanation")
    session = _lock_unacknowledged(session)
    if call_id not in failed_call_ids(session):
        raise ServiceError(
            "call_id: no failed call of this session has this call_id.",
            ErrorCode.NOT_A_FAILED_CALL,
            field="call_id",
        )
    item, created = FailedCallExplanation.objects.get_or_create(
        session=session, call_id=call_id, defaults={"explanation": explanation, "author": reviewer}
    )
    old = None if created else item.explanation
    if not created:
        item.explanation, item.author = explanation, reviewer
        item.save(update_fields=["explanation", "author", "updated_at"])
    change_record(
        team=session.team,
        actor=reviewer,
        event_type=ChangeEventType.FAILED_CALL_EXPLAINED
        if created
        else ChangeEventType.FAILED_CALL_EXPLANATION_CHANGED,
        obj=item,
        object_repr=f"failed call {call_id} of session {session.short_id}",
        summary="Failed call explained",
        changes={"explanation": [old, explanation]},
    )
    return item


@transaction.atomic
def session_acknowledge(*, session: AgentSession, reviewer, note: str = "") -> Acknowledgement:
    """Sign off a session's log. Refused while any failed call lacks an explanation."""
    require_team_perm(reviewer, ACKNOWLEDGE_SESSION, session.team)
    session = _lock_unacknowledged(session)
    if session.state not in (SessionState.ENDED, SessionState.REFUSED):
        raise Conflict(
            f"The session is {session.state}; a log is acknowledged once the session has ended.",
            ErrorCode.NOT_ENDED,
            state=session.state,
        )
    missing = unexplained_failed_calls(session)
    if missing:
        raise UnexplainedFailures(
            f"{len(missing)} failed call(s) need an explanation before the session can be acknowledged.",
            ErrorCode.UNEXPLAINED_FAILURES,
            call_ids=missing,
        )
    ack = Acknowledgement.objects.create(
        session=session,
        reviewer=reviewer,
        note=(note or "").strip(),
        at=timezone.now(),
        last_seq=session.last_seq,
    )
    change_record(
        team=session.team,
        actor=reviewer,
        event_type=ChangeEventType.SESSION_ACKNOWLEDGED,
        obj=session,
        summary=f"Session log acknowledged (events 1..{session.last_seq})"
        + (f": {ack.note}" if ack.note else ""),
    )
    return ack
