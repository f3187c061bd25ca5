"""Audit reads: the reviewers' session list, a session's call timeline, the halted queue, exports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from audit.choices import OUTCOME_UNKNOWN, WAITING_STATES, CallStatus, Phase, SessionState
from audit.models import (
    Acknowledgement,
    AgentSession,
    AuditEvent,
    FailedCallExplanation,
    SessionDecision,
    SessionStateChange,
)


def with_end(qs: QuerySet) -> QuerySet:
    """Annotate `ended_from`: the state a session was in when it ended ("halted by X, then ended")."""
    ends = SessionStateChange.objects.filter(session=OuterRef("pk"), to_state=SessionState.ENDED).exclude(
        from_state=SessionState.ENDED
    )
    first_end = ends.order_by("at", "pk")
    return qs.annotate(
        ended_from=Subquery(first_end.values("from_state")[:1]),
        ended_source=Subquery(first_end.values("source")[:1]),
    )


def _start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())


def sessions_for_review(
    *, base: QuerySet | None = None, team=None, filters: dict[str, Any] | None = None
) -> QuerySet:
    """Sessions of `team` (or of the restricted `base` queryset), newest first, filtered.

    filters: role, environment (name), server, status (blocked | failed | clean), state, trigger,
    acknowledged ("yes" | "no"), date_from, date_to (dates, on started_at).
    """
    qs = base if base is not None else AgentSession.objects.for_team(team)
    qs = with_end(qs.select_related("environment", "team", "client", "acknowledgement__reviewer"))
    f = {k: v for k, v in (filters or {}).items() if v not in (None, "")}
    if "role" in f:
        qs = qs.filter(role=f["role"])
    if "environment" in f:
        qs = qs.filter(environment__name=f["environment"])
    if "server" in f:
        qs = qs.filter(servers_used__contains=f" {f['server']} ")
    if "state" in f:
        qs = qs.filter(state=f["state"])
    if "trigger" in f:
        qs = qs.filter(Q(trigger=f["trigger"]) | Q(triggers_seen__contains=f" {f['trigger']} "))
    status = f.get("status")
    if status == CallStatus.BLOCKED:
        qs = qs.filter(calls_blocked__gt=0)
    elif status == CallStatus.FAIL:
        qs = qs.filter(calls_failed__gt=0)
    elif status == CallStatus.SUCCESS:
        qs = qs.filter(calls_blocked=0, calls_failed=0)
    if f.get("acknowledged") == "yes":
        qs = qs.filter(Exists(Acknowledgement.objects.filter(session=OuterRef("pk"))))
    elif f.get("acknowledged") == "no":
        qs = qs.filter(~Exists(Acknowledgement.objects.filter(session=OuterRef("pk"))))
    if "date_from" in f:
        qs = qs.filter(started_at__gte=_start_of(f["date_from"]))
    if "date_to" in f:
        qs = qs.filter(started_at__lt=_start_of(f["date_to"]) + timedelta(days=1))
    return qs.order_by("-started_at", "id")


@dataclass
class Call:
    """One call in a session's timeline: its INTENT and RESULT events side by side."""

    call_id: str
    intent: AuditEvent | None = None
    result: AuditEvent | None = None
    explanation: FailedCallExplanation | None = None
    decisions: list[SessionDecision] = field(default_factory=list)

    @property
    def first(self) -> AuditEvent:
        return self.intent or self.result

    outcome_unknown: bool = False

    @property
    def status(self) -> str:
        if self.result:
            return self.result.status
        return OUTCOME_UNKNOWN if self.outcome_unknown else "pending"

    @property
    def is_failed(self) -> bool:
        return bool(self.result and self.result.status == CallStatus.FAIL)

    @property
    def is_blocked(self) -> bool:
        return bool(self.result and self.result.status == CallStatus.BLOCKED)

    @property
    def trigger(self) -> str | None:
        return (self.result and self.result.trigger) or (self.intent and self.intent.trigger) or None


def session_timeline(*, session: AgentSession, limit: int | None = None) -> list[Call]:
    """The session's calls in order, INTENT and RESULT paired by call_id, with explanations."""
    events = AuditEvent.objects.filter(session=session).order_by("seq")
    if limit:
        events = events[:limit]
    calls: dict[str, Call] = {}
    for event in events:
        call = calls.setdefault(event.call_id, Call(call_id=event.call_id))
        if event.phase == Phase.INTENT and call.intent is None:
            call.intent = event
        else:
            call.result = event
    for item in FailedCallExplanation.objects.filter(session=session).select_related("author"):
        if item.call_id in calls:
            calls[item.call_id].explanation = item
    for decision in (
        SessionDecision.objects.filter(session=session).exclude(call_id="").select_related("decided_by")
    ):
        if decision.call_id in calls:
            calls[decision.call_id].decisions.append(decision)
    for open_calls in (
        SessionStateChange.objects.filter(session=session)
        .exclude(open_calls=[])
        .values_list("open_calls", flat=True)
    ):
        for item in open_calls:
            call = calls.get(item.get("call_id"))
            if call is not None and call.result is None:
                call.outcome_unknown = True
    return list(calls.values())


def session_history(*, session: AgentSession) -> list[SessionStateChange]:
    """The session's state changes in order, with who made them."""
    return list(
        SessionStateChange.objects.filter(session=session)
        .select_related("actor", "decision")
        .order_by("at", "pk")
    )


def last_calls(*, session: AgentSession, count: int = 3) -> list[dict[str, Any]]:
    """The last calls to show with a halted session: the gateway's report, else the stored results."""
    if session.last_calls:
        return list(session.last_calls)[-count:]
    results = list(AuditEvent.objects.filter(session=session, phase=Phase.RESULT).order_by("-seq")[:count])
    return [
        {
            "ts": e.ts.isoformat(),
            "server": e.server,
            "tool": e.tool,
            "args": e.args_summary,
            "outcome": e.status + (f" ({e.result_summary})" if e.result_summary else ""),
        }
        for e in reversed(results)
    ]


def _unreviewed_end() -> Q:
    """Ended while halted or paused, not by a person, not acknowledged: the halt still needs a
    review. Needs `with_end`'s annotations."""
    return (
        Q(state=SessionState.ENDED, ended_from__in=WAITING_STATES)
        & ~Q(ended_source=SessionStateChange.Source.PERSON)
        & ~Exists(Acknowledgement.objects.filter(session=OuterRef("pk")))
    )


def waiting_counts(*, team) -> dict[str, int]:
    """What the halted queue holds, counted (one query): halted and paused sessions (also those that
    ended so, unreviewed), calls waiting for approval, and ended sessions nobody acknowledged."""
    qs = with_end(AgentSession.objects.for_team(team)).annotate(
        acknowledged=Exists(Acknowledgement.objects.filter(session=OuterRef("pk")))
    )
    unreviewed = Q(state=SessionState.ENDED, acknowledged=False) & ~Q(
        ended_source=SessionStateChange.Source.PERSON
    )
    return qs.aggregate(
        halted=Count(
            "pk", filter=Q(state=SessionState.HALTED) | unreviewed & Q(ended_from=SessionState.HALTED)
        ),
        paused=Count(
            "pk", filter=Q(state=SessionState.PAUSED) | unreviewed & Q(ended_from=SessionState.PAUSED)
        ),
        approvals=Count("pk", filter=~Q(pending_approvals=[]) & ~Q(state=SessionState.ENDED)),
        acknowledge=Count("pk", filter=Q(state=SessionState.ENDED, acknowledged=False)),
    )


def halted_queue(*, team) -> list[AgentSession]:
    """Halted and paused sessions, and sessions with calls waiting for approval, oldest first.

    A session that ended while halted or paused, without a person releasing or ending it, stays
    here until it is acknowledged: the halt still needs a review. So does a start refused at the
    gate that nobody acknowledged yet.
    """
    unreviewed_end = _unreviewed_end()
    qs = (
        with_end(AgentSession.objects.for_team(team))
        .filter(
            Q(state__in=WAITING_STATES)
            | (~Q(pending_approvals=[]) & ~Q(state=SessionState.ENDED))
            | unreviewed_end
            | Q(state=SessionState.REFUSED, acknowledgement__isnull=True)
        )
        .select_related("environment")
        .order_by("updated_at", "id")
    )
    sessions = list(qs)
    for session in sessions:
        session.recent_calls = last_calls(session=session)
    return sessions


def session_events(*, sessions: QuerySet | list, date_from: date | None = None, date_to: date | None = None):
    """Events of the given sessions (ordered by session start, then seq), for exports."""
    qs = (
        AuditEvent.objects.filter(session__in=sessions)
        .select_related("session")
        .order_by("session__started_at", "session_id", "seq")
    )
    if date_from:
        qs = qs.filter(ts__gte=_start_of(date_from))
    if date_to:
        qs = qs.filter(ts__lt=_start_of(date_to) + timedelta(days=1))
    return qs


SHORT_ID_MIN = 6  # the pages show 8 characters; 6 or more are accepted where a session id is typed


class SessionIdError(LookupError):
    """The typed id names no session of the team, or more than one."""


def uuid_prefix(compact: str) -> str:
    """'1a2b3c4d5e' → '1a2b3c4d-5e': a hex prefix laid out the way a UUID is written."""
    out, at = [], 0
    for width in (8, 4, 4, 4, 12):
        if at >= len(compact):
            break
        out.append(compact[at : at + width])
        at += width
    return "-".join(out)


def sessions_with_id_prefix(*, team, text: str) -> QuerySet | None:
    """The team's sessions whose id starts with `text` (SHORT_ID_MIN or more hex characters, with or
    without hyphens), newest first; None when `text` is no such prefix."""
    import re

    from django.db import connection
    from django.db.models import CharField
    from django.db.models.functions import Cast

    compact = (text or "").strip().lower().replace("-", "")
    if not re.fullmatch(rf"[0-9a-f]{{{SHORT_ID_MIN},32}}", compact):
        return None
    # PostgreSQL writes a uuid as text with hyphens; SQLite stores 32 hex characters.
    prefix = compact if connection.vendor == "sqlite" else uuid_prefix(compact)
    return (
        AgentSession.objects.for_team(team)
        .annotate(id_text=Cast("id", CharField()))
        .filter(id_text__startswith=prefix)
        .order_by("-started_at")
    )


def session_by_typed_id(*, team, text: str) -> AgentSession:
    """The team's session named by a full UUID or by its first characters (at least SHORT_ID_MIN,
    with or without hyphens), as people copy them from pages. Raises SessionIdError when the id
    names none of the team's sessions, or more than one."""
    import uuid

    raw = (text or "").strip().lower()
    try:
        exact = uuid.UUID(raw)
    except ValueError:
        exact = None
    if exact is not None:
        found = AgentSession.objects.for_team(team).filter(pk=exact).first()
    else:
        candidates = sessions_with_id_prefix(team=team, text=raw)
        if candidates is None:
            raise SessionIdError(
                f"A session id is its UUID or its first {SHORT_ID_MIN} or more characters, as pages show them "
                "(e.g. 1a2b3c4d)."
            )
        matches = list(candidates[:2])
        if len(matches) > 1:
            raise SessionIdError(f"More than one session starts with {raw}: type more characters.")
        found = matches[0] if matches else None
    if found is None:
        raise SessionIdError("No agent session with this id in this team.")
    return found
