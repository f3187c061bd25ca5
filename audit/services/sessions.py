"""Agent sessions: opened and reported by gateways, released, ended and approved by people.

Every person's decision increases the session's `control_version`, is stored as a
SessionDecision with a ChangeRecord in the same transaction, and wakes the gateway's control
long poll on commit (portal.realtime channel `session-control:<uuid>`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.choices import (
    WAITING_STATES,
    DecisionKind,
    ErrorCode,
    SessionState,
    Trigger,
)
from audit.errors import AuditConflict, AuditError, AuditNotFound
from audit.models import AgentSession, SessionDecision
from audit.services.sealing import seal_on_commit
from governance.choices import AgentAuth
from portal import realtime
from portal.models import ChangeRecord
from portal.permissions import RELEASE_SESSION, require_team_perm
from portal.services import change_record

CONTROL_CHANNEL = "session-control:"


def control_channel(session_id) -> str:
    return f"{CONTROL_CHANNEL}{session_id}"


def _control_versions(channels: list[str]) -> dict[str, int]:
    """realtime source: the current control_version of each watched session (one query)."""
    ids = {}
    for ch in channels:
        try:
            ids[uuid.UUID(ch[len(CONTROL_CHANNEL) :])] = ch
        except ValueError:
            continue
    rows = AgentSession.objects.filter(pk__in=list(ids)).values_list("pk", "control_version")
    return {ids[pk]: version for pk, version in rows}


realtime.register_source(CONTROL_CHANNEL, _control_versions)


# --- gateway side ------------------------------------------------------------------------------


# A gateway may open a session it started offline (spooled), never one from the future or from long ago.
STARTED_AT_MAX_AHEAD = timedelta(minutes=10)
STARTED_AT_MAX_AGE = timedelta(days=365)


def _check_identity(*, client, role: str, agent: dict | str, started_at: datetime | None, refused: bool):
    """Roles come from credentials (docs/enforcer-api.md, "Agent identity"): (registered agent or None)."""
    from governance.models import Agent, AgentRole

    now = timezone.now()
    if started_at is not None and not (now - STARTED_AT_MAX_AGE <= started_at <= now + STARTED_AT_MAX_AHEAD):
        raise AuditError(
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
            raise AuditError(
                "agent: no such live agent in this team.", ErrorCode.UNKNOWN_AGENT, field="agent"
            )
    if refused:
        # A refusal is recorded whatever the role: refusing to record it would hide the attempt.
        return registered
    if not AgentRole.objects.filter(team_id=client.team_id, name=role).exists():
        raise AuditError(f"role: the team has no role {role!r}.", ErrorCode.UNKNOWN_ROLE, field="role")
    if not client.roles.filter(name=role).exists():
        raise AuditError(
            f"role: this enforcement client may not enforce {role!r}.",
            ErrorCode.ROLE_NOT_ALLOWED,
            field="role",
        )
    if registered is not None:
        if role not in {r.name for r in registered.roles.all()}:
            raise AuditError(
                f"role: agent {registered.slug} may not use {role!r}.",
                ErrorCode.ROLE_NOT_ALLOWED,
                field="role",
            )
        if client.environment_id not in {e.pk for e in registered.environments.all()}:
            raise AuditError(
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
            raise AuditConflict("This session id is already in use.", ErrorCode.SESSION_CONFLICT)
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
        session, created = AgentSession.objects.get_or_create(
            pk=id,
            defaults={
                "team_id": client.team_id, "environment_id": client.environment_id, "client": client,
                "role": role, "read_only": read_only, "declared_large_data": declared_large_data,
                "agent": label, "registered_agent": registered, "agent_auth": auth, "run_id": run_id,
                "started_at": started_at or now, "bundle_version": bundle_version,
                "state": SessionState.REFUSED if refused else SessionState.ACTIVE,
                "trigger": trigger if refused else None,
                "gate_report": gate_report if refused else None,
                "ended_at": (started_at or now) if refused else None,
            },
        )  # fmt: skip
    if not created and (session.team_id != client.team_id or session.environment_id != client.environment_id):
        raise AuditConflict("This session id is already in use.", ErrorCode.SESSION_CONFLICT)
    return session, created


def _session_for_client(client, session_id, *, lock: bool = False) -> AgentSession:
    qs = AgentSession.objects.filter(
        pk=session_id, team_id=client.team_id, environment_id=client.environment_id
    )
    session = (qs.select_for_update() if lock else qs).first()
    if session is None:
        raise AuditNotFound("No such session for this enforcement client.")
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
        raise AuditError(f"state: {state!r} is not one of {', '.join(SessionState.values)}.", field="state")
    if trigger is not None and trigger not in Trigger.values:
        raise AuditError(f"trigger: unknown trigger {trigger!r}.", field="trigger")
    if state == SessionState.REFUSED:
        raise AuditError(
            "state: a session is refused when it is opened (POST /sessions/), not later.", field="state"
        )
    with transaction.atomic():
        session = _session_for_client(client, session_id, lock=True)
        if session.state == SessionState.REFUSED:
            # Refused at the gate: nothing ran, and the refusal stays what the reviewers see.
            if state == SessionState.ENDED:
                return session
            raise AuditConflict(
                "The session was refused at the gate.", ErrorCode.SESSION_ENDED, state=session.state
            )
        if session.state == SessionState.ENDED:
            if state == SessionState.ENDED:
                return session
            raise AuditConflict("The session has ended.", ErrorCode.SESSION_ENDED, state=session.state)
        if state == SessionState.ACTIVE and session.state in WAITING_STATES:
            raise AuditConflict(
                f"The session is {session.state}; only a person can let it continue.",
                ErrorCode.NEEDS_RELEASE,
                state=session.state,
            )
        session.state = state
        if state != SessionState.ACTIVE or trigger is not None:
            session.trigger = trigger
        session.state_reason = reason or ""
        if last_calls is not None:
            session.last_calls = list(last_calls)[-3:]
        if state == SessionState.ENDED:
            session.ended_at = timezone.now()
        session.save(
            update_fields=["state", "trigger", "state_reason", "last_calls", "ended_at", "updated_at"]
        )
        # A session's end seals its chain at once; other reports seal only if a seal is due.
        seal_on_commit(team_id=session.team_id, only_if_due=state != SessionState.ENDED)
    return session


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
    """Store one decision, bump control_version, record the change, wake the gateway on commit."""
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


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise AuditError("A reason is required.", ErrorCode.REASON_REQUIRED, field="reason")
    return reason


@transaction.atomic
def session_release(*, session: AgentSession, reviewer, reason: str) -> SessionDecision:
    """Allow a halted or paused session to continue."""
    require_team_perm(reviewer, RELEASE_SESSION, session.team)
    reason = _reason(reason)
    session = AgentSession.objects.select_for_update().get(pk=session.pk)
    if session.state not in WAITING_STATES:
        raise AuditConflict(
            f"The session is {session.state}, not halted or paused.",
            ErrorCode.NOT_WAITING,
            state=session.state,
        )
    previous = session.state
    decision = _decide(session=session, reviewer=reviewer, kind=DecisionKind.RELEASE, reason=reason)
    session.state = SessionState.ACTIVE
    session.state_reason = f"Released by {reviewer.get_username()}: {reason}"
    session.save(update_fields=["state", "state_reason", "control_version", "updated_at"])
    change_record(
        team=session.team,
        actor=reviewer,
        action=ChangeRecord.Action.ACTION,
        obj=session,
        summary=f"Session allowed to continue ({previous} → active): {reason}",
        changes={"state": [previous, SessionState.ACTIVE]},
    )
    realtime.notify_on_commit(control_channel(session.pk), session.control_version)
    return decision


@transaction.atomic
def session_end(*, session: AgentSession, reviewer, reason: str) -> SessionDecision:
    """End a session (halted, paused, or a running one a person stops)."""
    require_team_perm(reviewer, RELEASE_SESSION, session.team)
    reason = _reason(reason)
    session = AgentSession.objects.select_for_update().get(pk=session.pk)
    if session.state == SessionState.ENDED:
        raise AuditConflict("The session has already ended.", ErrorCode.SESSION_ENDED, state=session.state)
    previous = session.state
    decision = _decide(session=session, reviewer=reviewer, kind=DecisionKind.END, reason=reason)
    session.state = SessionState.ENDED
    session.ended_at = decision.decided_at
    session.state_reason = f"Ended by {reviewer.get_username()}: {reason}"
    session.save(update_fields=["state", "state_reason", "ended_at", "control_version", "updated_at"])
    change_record(
        team=session.team,
        actor=reviewer,
        action=ChangeRecord.Action.ACTION,
        obj=session,
        summary=f"Session ended by a reviewer ({previous} → ended): {reason}",
        changes={"state": [previous, SessionState.ENDED]},
    )
    seal_on_commit(team_id=session.team_id, only_if_due=False)
    realtime.notify_on_commit(control_channel(session.pk), session.control_version)
    return decision


@transaction.atomic
def call_approval_decide(
    *, session: AgentSession, reviewer, call_id: str, decision: str, reason: str
) -> SessionDecision:
    """Approve or deny one approval-required call the gateway holds back."""
    require_team_perm(reviewer, RELEASE_SESSION, session.team)
    if decision not in (DecisionKind.APPROVE, DecisionKind.DENY):
        raise AuditError("decision: must be 'approve' or 'deny'.", field="decision")
    reason = _reason(reason)
    session = AgentSession.objects.select_for_update().get(pk=session.pk)
    pending = [p for p in session.pending_approvals if p.get("call_id") == call_id]
    if not pending:
        raise AuditConflict(
            "No call of this session waits for approval with this call_id.",
            ErrorCode.NO_PENDING_APPROVAL,
            call_id=call_id,
        )
    if session.state == SessionState.ENDED:
        raise AuditConflict("The session has ended.", ErrorCode.SESSION_ENDED, state=session.state)
    made = _decide(session=session, reviewer=reviewer, kind=decision, reason=reason, call_id=call_id)
    session.pending_approvals = [p for p in session.pending_approvals if p.get("call_id") != call_id]
    session.save(update_fields=["pending_approvals", "control_version", "updated_at"])
    call = pending[0]
    verb = "approved" if decision == DecisionKind.APPROVE else "denied"
    change_record(
        team=session.team,
        actor=reviewer,
        action=ChangeRecord.Action.ACTION,
        obj=session,
        summary=f"Call {call.get('server')}.{call.get('tool')} ({call_id}) {verb}: {reason}",
    )
    realtime.notify_on_commit(control_channel(session.pk), session.control_version)
    return made


__all__ = [
    "CONTROL_CHANNEL",
    "call_approval_decide",
    "control_channel",
    "session_control",
    "session_end",
    "session_open",
    "session_release",
    "session_report_state",
]
