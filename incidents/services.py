"""Incidents: open → contain (kill the affected servers' flags) → link sessions → root cause → resolve.

Every step is an IncidentEntry on the timeline (who, when, what) and a ChangeRecord.
Containment remembers exactly which flag states it switched off, so resolving can offer
to switch those — and only those — back on.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.selectors import SessionIdError, session_by_typed_id
from audit.services.sessions import sessions_resume_after_flag
from governance.choices import Capability
from governance.models import Flag, FlagState, McpServer
from governance.services import notifications
from governance.services.flags import default_flag_name, flag_state_apply, flags_changed
from incidents.choices import IncidentStatus, Severity
from incidents.models import Incident, IncidentEntry
from portal.choices import ChangeEventType
from portal.models import Team
from portal.permissions import MANAGE_INCIDENTS, TOGGLE_FLAGS, require_team_perm
from portal.services import change_record

Kind = IncidentEntry.Kind


def _check(actor, team: Team, *perms: str) -> None:
    for perm in (MANAGE_INCIDENTS, *perms):
        require_team_perm(actor, perm, team)


def _lock(incident: Incident) -> None:
    Incident.objects.select_for_update().filter(pk=incident.pk).values_list("pk").get()
    incident.refresh_from_db()


def _entry(incident: Incident, kind: str, actor, text: str = "", detail: dict | None = None) -> IncidentEntry:
    entry = IncidentEntry.objects.create(
        incident=incident, kind=kind, actor=actor, text=text, detail=detail or {}
    )
    change_record(
        team=incident.team,
        actor=actor,
        event_type=ChangeEventType(f"incident_{kind}"),
        obj=incident,
        summary=f"{entry.get_kind_display()}" + (f": {text}" if text else ""),
    )
    return entry


def _not_resolved(incident: Incident) -> None:
    if incident.status == IncidentStatus.RESOLVED:
        raise ValidationError("This incident is resolved.")


@transaction.atomic
def incident_open(
    *, team: Team, title: str, severity: str, servers: Iterable[McpServer] = (), actor, description: str = ""
) -> Incident:
    _check(actor, team)
    title = (title or "").strip()
    servers = list(servers)
    errors = {}
    if not title:
        errors["title"] = "Give the incident a title."
    if severity not in Severity.values:
        errors["severity"] = f"Severity must be one of {', '.join(Severity.values)}."
    if any(s.team_id != team.pk for s in servers):
        errors["servers"] = "Every affected server must belong to this team."
    if errors:
        raise ValidationError(errors)
    incident = Incident(team=team, title=title[:300], severity=severity, opened_by=actor)
    incident.full_clean(exclude=["affected_servers"])
    incident.save()
    incident.affected_servers.set(servers)
    _entry(
        incident,
        Kind.OPENED,
        actor,
        description.strip(),
        {"severity": severity, "servers": sorted(s.slug for s in servers)},
    )
    notifications.incident_event(incident, event="opened", actor=actor, detail=description.strip())
    return incident


@transaction.atomic
def incident_add_servers(*, incident: Incident, servers: Iterable[McpServer], actor) -> Incident:
    _check(actor, incident.team)
    _lock(incident)
    _not_resolved(incident)
    servers = [s for s in servers if not incident.affected_servers.filter(pk=s.pk).exists()]
    if any(s.team_id != incident.team_id for s in servers):
        raise ValidationError({"servers": "Every affected server must belong to this team."})
    if servers:
        incident.affected_servers.add(*servers)
        _entry(
            incident,
            Kind.NOTE,
            actor,
            f"Affected servers added: {', '.join(sorted(s.slug for s in servers))}",
            {"servers_added": sorted(s.slug for s in servers)},
        )
    return incident


@transaction.atomic
def incident_contain(*, incident: Incident, actor) -> IncidentEntry:
    """Disable every flag of the affected servers in every environment, in one step.

    The reason every halted agent sees is the incident's title. A server with no flag
    gets one (`mcp.<server>.all`) so containment always stops it. Flag states that were
    already off are left alone and not claimed by this incident.
    """
    _check(actor, incident.team, TOGGLE_FLAGS)
    _lock(incident)
    _not_resolved(incident)
    servers = list(incident.affected_servers.order_by("slug"))
    if not servers:
        raise ValidationError("Name the affected servers first: containment disables their flags.")
    team = incident.team
    environments = list(team.environments.all())
    reason = f"Incident #{incident.pk}: {incident.title}"
    created_flags = []
    for server in servers:
        if not Flag.objects.filter(server=server).exists():
            flag = Flag(
                team=team,
                server=server,
                capability=Capability.ALL,
                name=_free_flag_name(team, default_flag_name(server, Capability.ALL)),
                description=f"Created by containment of incident #{incident.pk}.",
            )
            flag.full_clean()
            flag.save()
            change_record(
                team=team,
                actor=actor,
                event_type=ChangeEventType.INCIDENT_FLAG_CREATED,
                obj=flag,
                summary=f"Flag {flag.name} added to contain incident #{incident.pk}",
            )
            created_flags.append(flag.name)
    disabled = []
    for flag in Flag.objects.filter(server__in=servers).select_related("server").order_by("name"):
        for env in environments:
            state, changes = flag_state_apply(
                flag=flag, environment=env, enabled=False, constraints=None, reason=reason, actor=actor
            )
            if "enabled" in changes:
                disabled.append({"state": state.pk, "flag": flag.name, "environment": env.name})
    was = incident.status
    incident.status = IncidentStatus.CONTAINED
    incident.contained_at = incident.contained_at or timezone.now()
    incident.save(update_fields=["status", "contained_at"])
    text = (
        f"Disabled {len(disabled)} flag state{'s' if len(disabled) != 1 else ''} of "
        f"{', '.join(s.slug for s in servers)} in every environment"
    )
    entry = _entry(
        incident,
        Kind.CONTAINED,
        actor,
        text,
        {"disabled": disabled, "flags_created": created_flags, "reason": reason, "status_was": was},
    )
    if disabled:
        flags_changed(team, environments, f"incident #{incident.pk} contained")
    notifications.incident_event(
        incident,
        event="contained",
        actor=actor,
        detail="\n".join(f"- {d['flag']} off in {d['environment']}" for d in disabled) or "No flag was on.",
    )
    return entry


def _free_flag_name(team: Team, name: str) -> str:
    candidate, n = name, 2
    while Flag.objects.filter(team=team, name=candidate).exists():
        candidate, n = f"{name}-{n}", n + 1
    return candidate


@transaction.atomic
def incident_link_session(*, incident: Incident, session_id: str, actor, note: str = "") -> IncidentEntry:
    """Link an agent session (its audit trail) to the incident for review."""
    _check(actor, incident.team)
    _lock(incident)
    try:
        session = session_by_typed_id(team=incident.team, text=str(session_id))
    except SessionIdError as exc:
        raise ValidationError({"session_id": str(exc)}) from exc
    if incident.sessions.filter(pk=session.pk).exists():
        raise ValidationError({"session_id": "This session is already linked."})
    incident.sessions.add(session)
    return _entry(
        incident,
        Kind.SESSION_LINKED,
        actor,
        note.strip() or f"Session {session.pk} linked",
        {"session_id": str(session.pk)},
    )


@transaction.atomic
def incident_record_root_cause(*, incident: Incident, root_cause: str, actor) -> IncidentEntry:
    _check(actor, incident.team)
    _lock(incident)
    _not_resolved(incident)
    root_cause = (root_cause or "").strip()
    if not root_cause:
        raise ValidationError({"root_cause": "Describe the root cause."})
    previous = incident.root_cause
    incident.root_cause = root_cause
    incident.save(update_fields=["root_cause"])
    return _entry(incident, Kind.ROOT_CAUSE, actor, root_cause, {"previous": previous} if previous else {})


@transaction.atomic
def incident_add_note(*, incident: Incident, text: str, actor) -> IncidentEntry:
    _check(actor, incident.team)
    text = (text or "").strip()
    if not text:
        raise ValidationError({"text": "Write the note."})
    return _entry(incident, Kind.NOTE, actor, text)


def contained_flag_states(incident: Incident) -> list[FlagState]:
    """Flag states this incident's containment switched off that are still off (re-enable candidates)."""
    ids = [
        d["state"]
        for e in incident.timeline.filter(kind=Kind.CONTAINED)
        for d in e.detail.get("disabled", [])
    ]
    return list(
        FlagState.objects.filter(pk__in=ids, enabled=False, flag__team=incident.team)
        .select_related("flag", "environment")
        .order_by("flag__name", "environment__order")
    )


@transaction.atomic
def incident_resolve(
    *,
    incident: Incident,
    actor,
    reenable: Iterable[FlagState | int] = (),
    note: str = "",
    resume_sessions: bool = False,
) -> IncidentEntry:
    """Resolve, switching back on the chosen flag states that containment disabled.

    Needs a recorded root cause. Only states this incident switched off can be re-enabled here.
    With `resume_sessions`, the sessions those flags halted are released too (one decision each,
    by `actor`, who then needs release_session).
    """
    _check(actor, incident.team)
    _lock(incident)
    _not_resolved(incident)
    if not incident.root_cause.strip():
        raise ValidationError({"root_cause": "Record the root cause before resolving the incident."})
    wanted = {s.pk if isinstance(s, FlagState) else int(s) for s in reenable}
    candidates = {s.pk: s for s in contained_flag_states(incident)}
    unknown = wanted - set(candidates)
    if unknown:
        raise ValidationError(
            {"reenable": "Only flags this incident's containment disabled can be re-enabled here."}
        )
    if wanted:
        require_team_perm(actor, TOGGLE_FLAGS, incident.team)
    was = incident.status
    incident.status = IncidentStatus.RESOLVED
    incident.resolved_at = timezone.now()
    incident.save(update_fields=["status", "resolved_at"])
    entry = _entry(incident, Kind.RESOLVED, actor, note.strip(), {"status_was": was})
    enabled = []
    for pk in sorted(wanted):
        state = candidates[pk]
        flag_state_apply(
            flag=state.flag,
            environment=state.environment,
            enabled=True,
            constraints=None,
            reason=f"Incident #{incident.pk} resolved",
            actor=actor,
        )
        enabled.append({"state": pk, "flag": state.flag.name, "environment": state.environment.name})
    resumed = []
    if resume_sessions:
        for pk in sorted(wanted):
            state = candidates[pk]
            for decision in sessions_resume_after_flag(
                flag=state.flag,
                environment=state.environment,
                reviewer=actor,
                reason=f"incident #{incident.pk} resolved",
            ):
                resumed.append(str(decision.session_id))
    if enabled:
        _entry(
            incident,
            Kind.FLAGS_REENABLED,
            actor,
            ", ".join(f"{d['flag']} in {d['environment']}" for d in enabled)
            + (f"; {len(resumed)} halted session(s) allowed to continue" if resumed else ""),
            {"enabled": enabled, "sessions_resumed": resumed},
        )
        flags_changed(
            incident.team, [candidates[pk].environment for pk in wanted], f"incident #{incident.pk} resolved"
        )
    still_off = [s for pk, s in candidates.items() if pk not in wanted]
    notifications.incident_event(
        incident,
        event="resolved",
        actor=actor,
        detail="\n".join(
            [f"- {d['flag']} re-enabled in {d['environment']}" for d in enabled]
            + [f"- {s.flag.name} left off in {s.environment.name}" for s in still_off]
        ),
    )
    return entry


def sessions_halted_by(states: Iterable[FlagState]) -> int:
    """How many waiting sessions these flag states halted (the resolve form offers to resume them)."""
    from audit.services.sessions import sessions_halted_by_flag

    return sum(len(sessions_halted_by_flag(flag=s.flag, environment=s.environment)) for s in states)
