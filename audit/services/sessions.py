"""Agent sessions: opened and reported by gateways, released, ended and approved by people.

Every person's decision increases the session's `control_version`, is stored as a
SessionDecision with a ChangeRecord in the same transaction, and wakes the gateway's control
long poll on commit (portal.realtime channel `session-control:<uuid>`).

Every state change, whoever makes it, appends a SessionStateChange in its transaction
(audit.history). Ending never erases a halt: the trigger, the last calls and the halt's reason
stay on the session, and the history says "halted by X, then ended".
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from audit.choices import (
    STALE_END_REASON,
    WAITING_STATES,
    DecisionKind,
    ErrorCode,
    Phase,
    SessionState,
    Trigger,
)
from audit.history import flag_from_reason, state_change_record
from audit.models import AgentSession, AuditEvent, SessionDecision, SessionStateChange
from audit.services.sealing import seal_on_commit
from governance.choices import AgentAuth
from governance.services.webhooks import webhook_notify
from portal import realtime
from portal.choices import ChangeEventType
from portal.errors import Conflict, NotFound, ServiceError
from portal.permissions import RELEASE_SESSION, require_team_perm
from portal.services import change_record

CONTROL_CHANNEL = "session-control:"


def control_channel(session_id) -> str:
    return f"{CONTROL_CHANNEL}{session_id}"


def control_channel_versions(channels: list[str]) -> dict[str, int]:
    """realtime source: the current control_version of each watched session (one query)."""
    ids = {}
    for ch in channels:
        try:
            ids[uuid.UUID(ch[len(CONTROL_CHANNEL) :])] = ch
        except ValueError:
            continue
    rows = AgentSession.objects.filter(pk__in=list(ids)).values_list("pk", "control_version")
    return {ids[pk]: version for pk, version in rows}


# --- gateway side ------------------------------------------------------------------------------


# A gateway may open a session it started offline (spooled), never one from the future or from long ago.
STARTED_AT_MAX_AHEAD = timedelta(minutes=10)
STARTED_AT_MAX_AGE = timedelta(days=365)


def _check_identity(*, client, role: str, agent: dict | str, started_at: datetime | None, refused: bool):
    """Roles come from credentials (docs/enforcer-api.md, "Agent identity"): (registered agent or None)."""
    from governance.models import Agent, AgentRole

    now = timezone.now()
    if started_at is not None and not (now - STARTED_AT_MAX_AGE <= started_at <= now + STARTED_AT_MAX_AHEAD):
        raise ServiceError(
            "started_at: must be within the last year and at most 10 minutes ahead of the portal.",
            field="started_at",
        )
    registered = None
    if isinstance(agent, dict) and agent["auth"] != AgentAuth.LOCAL:
        registered = (
            Agent.objects.filter(
                pk=agent["id"] if str(agent["id"]).isdigit() else None, team_id=client.team_id
            )
            .prefetch_related("roles", "environments")
            .first()
        )
        if registered is None or registered.revoked_at is not None:
            raise ServiceError(
                "agent: no such live agent in this team.", ErrorCode.UNKNOWN_AGENT, field="agent"
            )
    if refused:
        # A refusal is recorded whatever the role: refusing to record it would hide the attempt.
        return registered
    if not AgentRole.objects.filter(team_id=client.team_id, name=role).exists():
        raise ServiceError(f"role: the team has no role {role!r}.", ErrorCode.UNKNOWN_ROLE, field="role")
    if not client.roles.filter(name=role).exists():
        raise ServiceError(
            f"role: this enforcement client may not enforce {role!r}.",
            ErrorCode.ROLE_NOT_ALLOWED,
            field="role",
        )
    if registered is not None:
        if role not in {r.name for r in registered.roles.all()}:
            raise ServiceError(
                f"role: agent {registered.slug} may not use {role!r}.",
                ErrorCode.ROLE_NOT_ALLOWED,
                field="role",
            )
        if client.environment_id not in {e.pk for e in registered.environments.all()}:
            raise ServiceError(
                f"agent: {registered.slug} may not work in this environment.",
                ErrorCode.ROLE_NOT_ALLOWED,
                field="agent",
            )
    return registered


def session_open(
    *,
    client,
    id: uuid.UUID,
    role: str,
    read_only: bool = True,
    declared_large_data: bool = False,
    agent: dict | str = "",
    run_id: str = "",
    started_at: datetime | None = None,
    bundle_version: int | None = None,
    state: str = SessionState.ACTIVE,
    trigger: str | None = None,
    gate_report: dict | None = None,
) -> tuple[AgentSession, bool]:
    """Open a session for `client` (its team and environment). Idempotent by id: (session, created).

    `state="refused"` records a start the gateway's environment gate turned down, with its report.
    """
    existing = AgentSession.objects.filter(pk=id).first()
    if existing is not None:
        if existing.team_id != client.team_id or existing.environment_id != client.environment_id:
            raise Conflict("This session id is already in use.", ErrorCode.SESSION_CONFLICT)
        return existing, False
    refused = state == SessionState.REFUSED
    registered = _check_identity(
        client=client, role=role, agent=agent, started_at=started_at, refused=refused
    )
    if isinstance(agent, dict):
        label, auth = agent["slug"], agent["auth"]
    else:
        label, auth = agent, ""
    now = timezone.now()
    with transaction.atomic():
        now = timezone.now()
        session, created = AgentSession.objects.get_or_create(
            pk=id,
            defaults={
                "team_id": client.team_id,
                "environment_id": client.environment_id,
                "client": client,
                "role": role,
                "read_only": read_only,
                "declared_large_data": declared_large_data,
                "agent": label,
                "registered_agent": registered,
                "agent_auth": auth,
                "run_id": run_id,
                "started_at": started_at or now,
                "bundle_version": bundle_version,
                "state": SessionState.REFUSED if refused else SessionState.ACTIVE,
                "trigger": trigger if refused else None,
                "gate_report": gate_report if refused else None,
                "ended_at": (started_at or now) if refused else None,
                "last_seen_at": now,
            },
        )
        if created:
            state_change_record(
                session=session,
                from_state="",
                to_state=SessionState.ACTIVE,
                source=SessionStateChange.Source.GATEWAY,
                reason="Opened",
                at=session.started_at,
            )
    if not created and (session.team_id != client.team_id or session.environment_id != client.environment_id):
        raise Conflict("This session id is already in use.", ErrorCode.SESSION_CONFLICT)
    return session, created


def _session_for_client(client, session_id, *, lock: bool = False) -> AgentSession:
    qs = AgentSession.objects.filter(
        pk=session_id, team_id=client.team_id, environment_id=client.environment_id
    )
    session = (qs.select_for_update() if lock else qs).first()
    if session is None:
        raise NotFound("No such session for this enforcement client.")
    return session


def session_report_state(
    *,
    client,
    session_id,
    state: str,
    trigger: str | None = None,
    reason: str = "",
    last_calls: list[dict[str, Any]] | None = None,
) -> AgentSession:
    """The gateway reports a state change. It may halt, pause or end, never release itself."""
    if state not in SessionState.values:
        raise ServiceError(f"state: {state!r} is not one of {', '.join(SessionState.values)}.", field="state")
    if trigger is not None and trigger not in Trigger.values:
        raise ServiceError(f"trigger: unknown trigger {trigger!r}.", field="trigger")
    if state == SessionState.REFUSED:
        raise ServiceError(
            "state: a session is refused when it is opened (POST /sessions/), not later.", field="state"
        )
    with transaction.atomic():
        session = _session_for_client(client, session_id, lock=True)
        if session.state == SessionState.REFUSED:
            # Refused at the gate: nothing ran, and the refusal stays what the reviewers see.
            if state == SessionState.ENDED:
                return session
            raise Conflict(
                "The session was refused at the gate.", ErrorCode.SESSION_ENDED, state=session.state
            )
        now = timezone.now()
        if session.state == SessionState.ENDED:
            if state == SessionState.ENDED:
                _late_end_report(session, trigger=trigger, reason=reason, last_calls=last_calls, now=now)
                return session
            raise Conflict("The session has ended.", ErrorCode.SESSION_ENDED, state=session.state)
        if state == SessionState.ACTIVE and session.state in WAITING_STATES:
            raise Conflict(
                f"The session is {session.state}; only a person can let it continue.",
                ErrorCode.NEEDS_RELEASE,
                state=session.state,
            )
        previous, previous_trigger = session.state, session.trigger
        session.state = state
        # An end report does not erase how the session got there: a halt's trigger, reason and
        # last calls stay (the gateway usually ends without a trigger and with no new calls).
        ending = state == SessionState.ENDED
        if ending:
            if trigger is not None:
                session.trigger = trigger
            if previous not in WAITING_STATES:
                session.state_reason = reason or ""
        else:
            if state != SessionState.ACTIVE or trigger is not None:
                session.trigger = trigger
            session.state_reason = reason or ""
        if last_calls:
            session.last_calls = list(last_calls)[-3:]
        elif last_calls is not None and not ending:
            session.last_calls = []
        if ending:
            session.ended_at = now
        session.last_seen_at = now
        session.save(
            update_fields=[
                "state",
                "trigger",
                "state_reason",
                "last_calls",
                "ended_at",
                "last_seen_at",
                "updated_at",
            ]
        )
        if previous != state or (trigger is not None and trigger != previous_trigger):
            state_change_record(
                session=session,
                from_state=previous,
                to_state=state,
                trigger=trigger,
                source=SessionStateChange.Source.GATEWAY,
                reason=reason,
                at=now,
            )
            if state in WAITING_STATES and previous != state:
                webhook_notify(
                    team=session.team,
                    kind=f"session_{state}",
                    text=f"Session {str(session.pk)[:8]} ({session.role} in {session.environment.name}) {state}"
                    + (f" by {trigger}" if trigger else "")
                    + (f": {reason}" if reason else "")
                    + ". It waits for a person to let it continue.",
                    url=reverse("audit:session-detail", args=[session.pk]),
                )
        # A session's end seals its chain at once; other reports seal only if a seal is due.
        seal_on_commit(team_id=session.team_id, only_if_due=state != SessionState.ENDED)
    return session


def _late_end_report(session: AgentSession, *, trigger, reason: str, last_calls, now) -> None:
    """The gateway reports the end of a session already ended (by a person or as stale): keep everything.

    Its restart recovery does this for the sessions it finds in its spool. The first such report
    after the portal's own end is recorded in the history; what the session lacks (its last
    calls, a trigger) is filled in, nothing stored is replaced.
    """
    fields = ["last_seen_at"]
    session.last_seen_at = now
    if last_calls and not session.last_calls:
        session.last_calls = list(last_calls)[-3:]
        fields.append("last_calls")
    if trigger is not None and not session.trigger:
        session.trigger = trigger
        fields.append("trigger")
    session.save(update_fields=[*fields, "updated_at"])
    history = SessionStateChange.objects.filter(session=session)
    if history.filter(to_state=SessionState.ENDED).exclude(
        source=SessionStateChange.Source.GATEWAY
    ).exists() and (
        not history.filter(to_state=SessionState.ENDED, source=SessionStateChange.Source.GATEWAY).exists()
    ):
        state_change_record(
            session=session,
            from_state=SessionState.ENDED,
            to_state=SessionState.ENDED,
            trigger=trigger,
            source=SessionStateChange.Source.GATEWAY,
            reason="The gateway reported the end late" + (f": {reason}" if reason else ""),
            at=now,
        )


SEEN_WRITE_EVERY = timedelta(seconds=30)


def session_seen(*, session: AgentSession) -> None:
    """The gateway polled the session's control channel: it is alive (one write per 30 s at most)."""
    now = timezone.now()
    if session.last_seen_at is None or now - session.last_seen_at >= SEEN_WRITE_EVERY:
        AgentSession.objects.filter(pk=session.pk).update(last_seen_at=now)
        session.last_seen_at = now


def session_control(*, session: AgentSession, since: int = 0) -> dict[str, Any]:
    """What the gateway's control poll answers: state, control_version, the last decision, approvals."""
    decisions = list(
        SessionDecision.objects.filter(session=session, control_version__gt=since)
        .select_related("decided_by")
        .order_by("control_version")
    )
    last_session_decision = next(
        (d for d in reversed(decisions) if d.kind in (DecisionKind.RELEASE, DecisionKind.END)), None
    )
    if last_session_decision is None and not decisions:
        last_session_decision = (
            SessionDecision.objects.filter(session=session, kind__in=[DecisionKind.RELEASE, DecisionKind.END])
            .select_related("decided_by")
            .order_by("-control_version")
            .first()
        )
    body: dict[str, Any] = {
        "state": session.state,
        "control_version": session.control_version,
        "decided_by": last_session_decision.decided_by.get_username() if last_session_decision else None,
        "reason": last_session_decision.reason if last_session_decision else None,
        "decided_at": _rfc3339(last_session_decision.decided_at) if last_session_decision else None,
        "approvals": [
            {
                "call_id": d.call_id,
                "decision": d.kind,
                "by": d.decided_by.get_username(),
                "reason": d.reason,
                "decided_at": _rfc3339(d.decided_at),
            }
            for d in decisions
            if d.kind in (DecisionKind.APPROVE, DecisionKind.DENY)
        ],
    }
    return body


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- people's decisions ------------------------------------------------------------------------


def _decide(*, session: AgentSession, reviewer, kind: str, reason: str, call_id: str = "") -> SessionDecision:
    """Store one decision and bump control_version (the caller saves the session)."""
    now = timezone.now()
    session.control_version += 1
    decision = SessionDecision.objects.create(
        session=session,
        kind=kind,
        call_id=call_id,
        reason=reason,
        decided_by=reviewer,
        decided_at=now,
        control_version=session.control_version,
        from_state=session.state,
    )
    return decision


def _record_person_move(
    session: AgentSession, decision: SessionDecision, *, previous: str, event_type, summary: str
):
    """A person's decision moved `session` from `previous` to its (saved) state: its state-history
    row, its change-history row, and the gateway woken on commit."""
    state_change_record(
        session=session,
        from_state=previous,
        to_state=session.state,
        source=SessionStateChange.Source.PERSON,
        actor=decision.decided_by,
        decision=decision,
        reason=decision.reason,
        at=decision.decided_at,
    )
    change_record(
        team=session.team,
        actor=decision.decided_by,
        event_type=event_type,
        obj=session,
        summary=summary,
        changes={"state": [previous, session.state]},
    )
    realtime.notify_on_commit(control_channel(session.pk), session.control_version)


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("A reason is required.", ErrorCode.REASON_REQUIRED, field="reason")
    return reason


def halting_flag(session: AgentSession) -> str:
    """The kill-switch flag that halted this session ("" when no flag did)."""
    if session.state not in WAITING_STATES:
        return ""
    return flag_from_reason(session.trigger, session.state_reason)


def halting_flag_still_off(session: AgentSession) -> str:
    """The flag that halted this session when it is still off for the session's role, else "".

    Evaluated as the next bundle will carry it (the portal's contexts resolved by the bundle
    compiler) with the enforcer's own rule (mcpgov.bundle.Flag.is_on_for).
    """
    from governance.services.bundles import flag_constraints_resolve
    from governance.services.flags import flags_for_environment
    from mcpgov.bundle import Flag

    name = halting_flag(session)
    if not name:
        return ""
    for resolved in flags_for_environment(environment=session.environment):
        if resolved.name == name:
            passes, role_constraints = flag_constraints_resolve(
                list(resolved.constraints), session.environment.name
            )
            flag = Flag(name=name, enabled=resolved.enabled and passes, constraints=role_constraints)
            return "" if flag.is_on_for(session.role) else name
    return ""  # the flag was deleted: nothing refuses the calls any more


@transaction.atomic
def session_release(
    *, session: AgentSession, reviewer, reason: str, flag_off_confirmed: bool = False
) -> SessionDecision:
    """Allow a halted or paused session to continue.

    A session halted by a kill-switch flag that is still off halts again at its next call to
    that server: the release is refused (FLAG_STILL_OFF) unless the person confirmed it.
    """
    require_team_perm(reviewer, RELEASE_SESSION, session.team)
    reason = _reason(reason)
    session = AgentSession.objects.select_for_update().select_related("environment").get(pk=session.pk)
    if session.state not in WAITING_STATES:
        raise Conflict(
            f"The session is {session.state}, not halted or paused.",
            ErrorCode.NOT_WAITING,
            state=session.state,
        )
    flag = halting_flag_still_off(session)
    if flag and not flag_off_confirmed:
        raise Conflict(
            f"Flag {flag} is still off in {session.environment.name}: released, the session halts again at "
            "its next call of that flag. Enable the flag first, or confirm the release.",
            ErrorCode.FLAG_STILL_OFF,
            flag=flag,
        )
    previous = session.state
    decision = _decide(session=session, reviewer=reviewer, kind=DecisionKind.RELEASE, reason=reason)
    session.state = SessionState.ACTIVE
    session.state_reason = f"Released by {reviewer.get_username()}: {reason}"
    session.save(update_fields=["state", "state_reason", "control_version", "updated_at"])
    _record_person_move(
        session,
        decision,
        previous=previous,
        event_type=ChangeEventType.SESSION_RELEASED,
        summary=f"Session allowed to continue ({previous} → active): {reason}",
    )
    return decision


@transaction.atomic
def session_end(*, session: AgentSession, reviewer, reason: str) -> SessionDecision:
    """End a session (halted, paused, or a running one a person stops)."""
    require_team_perm(reviewer, RELEASE_SESSION, session.team)
    reason = _reason(reason)
    session = AgentSession.objects.select_for_update().get(pk=session.pk)
    if session.state == SessionState.ENDED:
        raise Conflict("The session has already ended.", ErrorCode.SESSION_ENDED, state=session.state)
    previous = session.state
    decision = _decide(session=session, reviewer=reviewer, kind=DecisionKind.END, reason=reason)
    session.state = SessionState.ENDED
    session.ended_at = decision.decided_at
    session.state_reason = f"Ended by {reviewer.get_username()}: {reason}"
    session.save(update_fields=["state", "state_reason", "ended_at", "control_version", "updated_at"])
    _record_person_move(
        session,
        decision,
        previous=previous,
        event_type=ChangeEventType.SESSION_ENDED,
        summary=f"Session ended by a reviewer ({previous} → ended): {reason}",
    )
    seal_on_commit(team_id=session.team_id, only_if_due=False)
    return decision


@transaction.atomic
def call_approval_decide(
    *, session: AgentSession, reviewer, call_id: str, decision: str, reason: str
) -> SessionDecision:
    """Approve or deny one approval-required call the gateway holds back."""
    require_team_perm(reviewer, RELEASE_SESSION, session.team)
    if decision not in (DecisionKind.APPROVE, DecisionKind.DENY):
        raise ServiceError("decision: must be 'approve' or 'deny'.", field="decision")
    reason = _reason(reason)
    session = AgentSession.objects.select_for_update().get(pk=session.pk)
    pending = [p for p in session.pending_approvals if p.get("call_id") == call_id]
    if not pending:
        raise Conflict(
            "No call of this session waits for approval with this call_id.",
            ErrorCode.NO_PENDING_APPROVAL,
            call_id=call_id,
        )
    if session.state == SessionState.ENDED:
        raise Conflict("The session has ended.", ErrorCode.SESSION_ENDED, state=session.state)
    made = _decide(session=session, reviewer=reviewer, kind=decision, reason=reason, call_id=call_id)
    session.pending_approvals = [p for p in session.pending_approvals if p.get("call_id") != call_id]
    session.save(update_fields=["pending_approvals", "control_version", "updated_at"])
    call = pending[0]
    verb = "approved" if decision == DecisionKind.APPROVE else "denied"
    change_record(
        team=session.team,
        actor=reviewer,
        event_type=ChangeEventType.CALL_APPROVED
        if decision == DecisionKind.APPROVE
        else ChangeEventType.CALL_DENIED,
        obj=session,
        summary=f"Call {call.get('server')}.{call.get('tool')} ({call_id}) {verb}: {reason}",
    )
    realtime.notify_on_commit(control_channel(session.pk), session.control_version)
    return made


# --- the portal's own ends and the kill switch's recovery -----------------------------------------


def open_intents(session: AgentSession) -> list[dict[str, Any]]:
    """INTENTs without a RESULT, in order: [{call_id, seq, server, tool}]."""
    finished = AuditEvent.objects.filter(session=session, phase=Phase.RESULT).values("call_id")
    rows = (
        AuditEvent.objects.filter(session=session, phase=Phase.INTENT)
        .exclude(call_id__in=finished)
        .order_by("seq")
        .values("call_id", "seq", "server", "tool")
    )
    return [dict(r) for r in rows]


def stale_sessions(*, before: datetime):
    """Sessions not ended whose gateway has not opened, reported, polled or shipped events since `before`."""
    return AgentSession.objects.exclude(state=SessionState.ENDED).filter(
        Q(last_seen_at__lt=before) | Q(last_seen_at__isnull=True, updated_at__lt=before)
    )


@transaction.atomic
def session_end_stale(*, session_id, before: datetime) -> SessionStateChange | None:
    """End one session whose gateway stopped reporting; its open INTENTs get outcome unknown.

    Safe to run twice: a session ended or seen again meanwhile is left alone (None). Events stay
    untouched — the unknown outcomes are listed on the history row, not appended to the chain,
    which remains the gateway's alone (its late events are still accepted; docs/audit.md).
    """
    session = AgentSession.objects.select_for_update().filter(pk=session_id).first()
    if session is None or session.state == SessionState.ENDED:
        return None
    if (session.last_seen_at or session.updated_at) >= before:
        return None
    now = timezone.now()
    previous = session.state
    session.state = SessionState.ENDED
    session.ended_at = now
    if previous not in WAITING_STATES:
        session.state_reason = STALE_END_REASON
    session.save(update_fields=["state", "state_reason", "ended_at", "updated_at"])
    unknown = open_intents(session)
    change = state_change_record(
        session=session,
        from_state=previous,
        to_state=SessionState.ENDED,
        source=SessionStateChange.Source.PORTAL,
        reason=STALE_END_REASON,
        open_calls=unknown,
        at=now,
    )
    change_record(
        team=session.team,
        actor=None,
        actor_label="portal",
        event_type=ChangeEventType.SESSION_TIMED_OUT,
        obj=session,
        summary=f"Session ended ({previous} → ended): gateway stopped reporting"
        + (f"; {len(unknown)} call(s) with outcome unknown" if unknown else ""),
        changes={"state": [previous, SessionState.ENDED]},
    )
    seal_on_commit(team_id=session.team_id, only_if_due=False)
    realtime.notify_on_commit(control_channel(session.pk), session.control_version)
    return change


def sessions_halted_by_flag(*, flag, environment) -> list[AgentSession]:
    """Sessions of `environment` halted by kill-switch flag `flag` and still waiting for a person."""
    candidates = AgentSession.objects.filter(
        team_id=flag.team_id,
        environment=environment,
        state=SessionState.HALTED,
        trigger=Trigger.KILL_SWITCH_FLAG,
    ).order_by("started_at", "id")
    return [s for s in candidates if flag_from_reason(s.trigger, s.state_reason) == flag.name]


def sessions_resume_after_flag(*, flag, environment, reviewer, reason: str = "") -> list[SessionDecision]:
    """Release every session `flag` halted in `environment` (after it was switched back on), one decision each."""
    why = f"Flag {flag.name} re-enabled in {environment.name}" + (
        f": {reason.strip()}" if reason.strip() else ""
    )
    return [
        session_release(session=s, reviewer=reviewer, reason=why, flag_off_confirmed=False)
        for s in sessions_halted_by_flag(flag=flag, environment=environment)
    ]


def halted_counts_by_flag(*, team) -> dict[tuple[str, int], int]:
    """{(flag name, environment id): sessions it halted that still wait} for the kill-switch panel."""
    counts: dict[tuple[str, int], int] = {}
    rows = AgentSession.objects.filter(
        team=team, state=SessionState.HALTED, trigger=Trigger.KILL_SWITCH_FLAG
    ).values_list("environment_id", "trigger", "state_reason")
    for env_id, trigger, reason in rows:
        name = flag_from_reason(trigger, reason)
        if name:
            counts[(name, env_id)] = counts.get((name, env_id), 0) + 1
    return counts


@transaction.atomic
def flag_enable_and_resume(
    *, flag, environment, actor, reason: str = "", resume: bool = False
) -> tuple[list, list[SessionDecision]]:
    """Switch `flag` back on in `environment` and, when asked, release the sessions it halted there.

    One transaction: each release is a SessionDecision by `actor` (who needs release_session)
    with the reason "Flag … re-enabled in …", and the gateways see the bundle and the releases
    after commit.
    """
    from governance.services.flags import flag_enable

    switched = flag_enable(flag=flag, environment=environment, actor=actor, reason=reason)
    released = (
        sessions_resume_after_flag(flag=flag, environment=environment, reviewer=actor, reason=reason)
        if resume
        else []
    )
    return switched, released
