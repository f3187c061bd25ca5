"""Kill-switch flags: create, toggle per environment, disable with a reason.

A toggle must reach every gateway at once, so a flag write signs a small flags update in its own
transaction (`governance.services.flag_updates`), which the bundle long polls deliver on commit; the
bundle itself is rebuilt with the debounce of every policy change. The change is also announced on
the real-time channel that the Unleash streaming endpoint listens to.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Max

from governance.choices import Capability
from governance.models import Environment, Flag, FlagState, McpServer
from governance.models.flags import validate_constraints
from governance.services.common import check_policy_perm, save_validated
from mcpgov.bundle import FLAG_CONTEXT_NAMES
from portal import realtime
from portal.choices import ChangeEventType
from portal.models import Team
from portal.permissions import TOGGLE_FLAGS, require_team_perm
from portal.services import change_record, real_user

logger = logging.getLogger(__name__)


FLAG_CHANNEL_PREFIX = "flags:"


def flag_channel(environment_id: int) -> str:
    """Real-time channel announcing flag changes of one environment (the Unleash stream waits on it)."""
    return f"{FLAG_CHANNEL_PREFIX}{environment_id}"


def flag_versions(environment_ids: list[int]) -> dict[int, str]:
    """{environment id: token that changes whenever a flag state of it changes} in one query."""
    rows = (
        FlagState.objects.filter(environment_id__in=environment_ids)
        .values("environment_id")
        .annotate(n=Count("pk"), last=Max("changed_at"))
        .values_list("environment_id", "n", "last")
    )
    tokens = {env_id: f"{n}:{last.isoformat() if last else ''}" for env_id, n, last in rows}
    return {env_id: tokens.get(env_id, "0:") for env_id in environment_ids}


def flag_channel_versions(channels: list[str]) -> dict[str, str]:
    ids = realtime.channel_ids(channels, FLAG_CHANNEL_PREFIX)
    return {ids[env_id]: token for env_id, token in flag_versions(list(ids)).items()}


def default_flag_name(server: McpServer, capability: str) -> str:
    return f"mcp.{server.slug}.{capability}"


def bundles_publish_now(*, team: Team, environments: Iterable[Environment] | None, reason: str) -> None:
    """After commit, publish the environments' bundles in this process, without the rebuild debounce.

    Kill switches and revocations must reach gateways within a second; the debounced Celery
    rebuild (`governance.tasks.schedule_bundle_rebuild`) adds a countdown and a worker hop.
    If publishing here fails, the debounced rebuild takes over.
    """
    env_ids = None if environments is None else sorted({e.pk for e in environments})

    def publish() -> None:
        from governance import tasks
        from governance.services.bundles import bundle_publish

        envs = Environment.objects.filter(team_id=team.pk).select_related("team").order_by("order", "pk")
        if env_ids is not None:
            envs = envs.filter(pk__in=env_ids)
        try:
            for env in envs:
                bundle_publish(environment=env, reason=reason)
        except Exception:
            logger.exception("Immediate bundle publish for team %s failed; scheduling a rebuild", team.pk)
            tasks.schedule_bundle_rebuild(team_id=team.pk, reason=reason)

    transaction.on_commit(publish)


def flags_changed(team: Team, environments: Iterable[Environment], reason: str) -> None:
    """Inside the write's transaction: sign a flags update of each environment (delivered to the
    gateways' long polls on commit), wake the flag streams, and schedule the bundle rebuild.

    An environment without a live bundle gets its bundle published now instead (nothing to update).
    """
    from governance import tasks
    from governance.services.flag_updates import flags_update_issue

    without_bundle = []
    # in id order: issuing locks each environment's row, as publishing does
    for env in sorted({e.pk: e for e in environments}.values(), key=lambda e: e.pk):
        # on commit, in this order: the gateways' update first (what a kill switch waits for), then the
        # flag streams (Unleash SDKs, the panel), whose token is not known before commit: they re-read
        if flags_update_issue(environment=env, reason=reason) is None:
            without_bundle.append(env)
        realtime.notify_on_commit(flag_channel(env.pk))
    if without_bundle:
        bundles_publish_now(team=team, environments=without_bundle, reason=reason)
    # The bundle carries the flags too (new gateways, the signed record). Running gateways have them
    # from the update already, so it is rebuilt a few seconds later than other policy changes: the wave
    # of whole-bundle downloads it starts stays out of the moments the update itself is delivered in.
    delay = settings.MCPGOV_FLAGS_REBUILD_DELAY_SECONDS
    transaction.on_commit(lambda: tasks.schedule_bundle_rebuild(team_id=team.pk, reason=reason, delay=delay))


def normalise_constraints(constraints) -> list[dict]:
    """Validate constraints and return them in their stored shape (values sorted, deduplicated)."""
    constraints = [] if constraints is None else constraints
    validate_constraints(constraints)
    out = []
    for i, c in enumerate(constraints, 1):
        if c["context_name"] not in FLAG_CONTEXT_NAMES:  # what a gateway evaluates
            raise ValidationError(
                {
                    "constraints": f"Constraint {i}: gateways evaluate flags per agent role; use context_name 'role'."
                }
            )
        out.append(
            {
                "context_name": c["context_name"],
                "operator": c["operator"],
                "values": sorted({v.strip() for v in c["values"] if v.strip()}),
            }
        )
        if not out[-1]["values"]:
            raise ValidationError({"constraints": f"Constraint {i}: values must name at least one role."})
    return out


@transaction.atomic
def flag_create(
    *,
    team: Team,
    server: McpServer,
    capability: str = Capability.ALL,
    name: str = "",
    description: str = "",
    actor=None,
) -> Flag:
    """A new flag, on in every environment. Needs CHANGE_POLICY (it is part of the policy)."""
    check_policy_perm(actor, team)
    if server.team_id != team.pk:
        raise ValidationError({"server": "The server belongs to another team."})
    if capability not in Capability.values:
        raise ValidationError({"capability": f"Capability must be one of {', '.join(Capability.values)}."})
    name = (name or "").strip() or default_flag_name(server, capability)
    if Flag.objects.filter(team=team, name=name).exists():
        raise ValidationError({"name": f"A flag named {name} already exists."})
    if Flag.objects.filter(server=server, capability=capability).exists():
        raise ValidationError({"capability": f"{server.slug} already has a flag for {capability} calls."})
    flag = Flag(team=team, server=server, capability=capability, name=name, description=description)
    save_validated(flag)
    environments = list(Environment.objects.filter(team=team))
    FlagState.objects.bulk_create(
        [
            FlagState(flag=flag, environment=env, enabled=True, changed_by=real_user(actor))
            for env in environments
        ]
    )
    change_record(
        team=team,
        actor=actor,
        event_type=ChangeEventType.FLAG_CREATED,
        obj=flag,
        summary=f"Flag {name} added for {server.slug} ({capability} calls)",
    )
    flags_changed(team, environments, f"flag {name} added")
    return flag


@transaction.atomic
def flag_delete(*, flag: Flag, actor=None) -> None:
    check_policy_perm(actor, flag.team)
    team, name = flag.team, flag.name
    environments = list(Environment.objects.filter(team=team))
    change_record(
        team=team,
        actor=actor,
        event_type=ChangeEventType.FLAG_DELETED,
        obj=flag,
        summary=f"Flag {name} removed",
    )
    flag.delete()
    flags_changed(team, environments, f"flag {name} removed")


def _check_toggle(actor, team: Team) -> None:
    if actor is not None:
        require_team_perm(actor, TOGGLE_FLAGS, team)


def flag_state_apply(
    *,
    flag: Flag,
    environment: Environment,
    enabled: bool,
    constraints,
    reason: str,
    actor,
    actor_label: str = "",
) -> tuple[FlagState, dict]:
    if environment.team_id != flag.team_id:
        raise ValidationError({"environment": "The environment belongs to another team."})
    reason = (reason or "").strip()
    state = FlagState.objects.select_for_update().filter(flag=flag, environment=environment).first()
    created = state is None
    if created:
        state = FlagState(flag=flag, environment=environment, enabled=True, constraints=[])
    else:  # the objects in hand (the row's own ids): validation and the history row read no copy of them
        state.flag, state.environment = flag, environment
    if not enabled and not reason and (created or state.enabled):
        raise ValidationError(
            {"reason": "Say why you disable this flag: every halted agent sees the reason."}
        )
    new_constraints = state.constraints if constraints is None else normalise_constraints(constraints)
    changes = {}
    if created or state.enabled != enabled:
        changes["enabled"] = [None if created else state.enabled, enabled]
    if new_constraints != state.constraints:
        changes["constraints"] = [state.constraints, new_constraints]
    if not changes:
        return state, {}
    if reason or "enabled" in changes:
        changes["reason"] = [state.reason, reason]
    state.enabled = enabled
    state.constraints = new_constraints
    state.reason = reason[:500]
    state.changed_by = real_user(actor)
    save_validated(state)
    verb = ("disabled" if not enabled else "enabled") if "enabled" in changes else "constraints changed"
    if "enabled" in changes:
        event_type = ChangeEventType.FLAG_ENABLED if enabled else ChangeEventType.FLAG_DISABLED
    else:
        event_type = ChangeEventType.FLAG_CONSTRAINTS_CHANGED
    change_record(
        team=flag.team,
        actor=actor,
        actor_label=actor_label,
        event_type=event_type,
        obj=state,
        summary=f"Flag {flag.name} {verb} in {environment.name}" + (f": {reason}" if reason else ""),
        changes=changes,
    )
    return state, changes


@transaction.atomic
def flag_set_state(
    *,
    flag: Flag,
    environment: Environment,
    enabled: bool,
    constraints: list | None = None,
    reason: str = "",
    actor=None,
) -> FlagState:
    """Switch `flag` on or off in `environment`, optionally with role constraints.

    Needs TOGGLE_FLAGS (admins, reviewers). Disabling needs a reason; `constraints=None`
    keeps the current ones.
    """
    _check_toggle(actor, flag.team)
    state, changes = flag_state_apply(
        flag=flag,
        environment=environment,
        enabled=enabled,
        constraints=constraints,
        reason=reason,
        actor=actor,
    )
    if changes:
        flags_changed(
            flag.team, [environment], f"flag {flag.name} {'on' if enabled else 'off'} in {environment.name}"
        )
    return state


@transaction.atomic
def flag_disable(
    *,
    flag: Flag,
    reason: str,
    actor=None,
    environment: Environment | None = None,
    environments: Iterable[Environment] | None = None,
    actor_label: str = "",
) -> list[FlagState]:
    """Kill switch: disable `flag` in the given environment(s), every environment when none is given.

    Returns the states it switched off (already-off ones are left as they are, reason included).
    """
    _check_toggle(actor, flag.team)
    if not (reason or "").strip():
        raise ValidationError(
            {"reason": "Say why you disable this flag: every halted agent sees the reason."}
        )
    envs = _environments(flag, environment, environments)
    switched = []
    for env in envs:
        state, changes = flag_state_apply(
            flag=flag,
            environment=env,
            enabled=False,
            constraints=None,
            reason=reason,
            actor=actor,
            actor_label=actor_label,
        )
        if "enabled" in changes:
            switched.append(state)
    if switched:
        flags_changed(flag.team, [s.environment for s in switched], f"flag {flag.name} disabled: {reason}")
    return switched


@transaction.atomic
def flag_enable(
    *,
    flag: Flag,
    actor=None,
    reason: str = "",
    environment: Environment | None = None,
    environments: Iterable[Environment] | None = None,
) -> list[FlagState]:
    """Switch `flag` back on in the given environment(s) (every environment when none is given)."""
    _check_toggle(actor, flag.team)
    switched = []
    for env in _environments(flag, environment, environments):
        state, changes = flag_state_apply(
            flag=flag, environment=env, enabled=True, constraints=None, reason=reason, actor=actor
        )
        if "enabled" in changes:
            switched.append(state)
    if switched:
        flags_changed(flag.team, [s.environment for s in switched], f"flag {flag.name} enabled")
    return switched


def _environments(flag: Flag, environment, environments) -> list[Environment]:
    if environment is not None:
        envs = [environment]
    elif environments is not None:
        envs = list(environments)
    else:
        envs = list(Environment.objects.filter(team=flag.team))
    if any(e.team_id != flag.team_id for e in envs):
        raise ValidationError({"environment": "The environment belongs to another team."})
    return envs


# --- reads shared by the kill-switch panel, the Unleash API and the bundle ------


@dataclass(frozen=True)
class ResolvedFlag:
    """A flag's strategy in one environment. A flag with no state there is on, unconstrained."""

    flag: Flag
    environment: Environment
    enabled: bool
    constraints: tuple
    reason: str
    changed_at: datetime | None
    changed_by: str

    @property
    def name(self) -> str:
        return self.flag.name


def flags_for_environment(*, environment: Environment) -> list[ResolvedFlag]:
    """Every flag of the environment's team, resolved for that environment, by name."""
    flags = Flag.objects.filter(team_id=environment.team_id).select_related("server").order_by("name")
    states = {
        s.flag_id: s
        for s in FlagState.objects.filter(
            environment=environment, flag__team_id=environment.team_id
        ).select_related("changed_by")
    }
    out = []
    for flag in flags:
        s = states.get(flag.pk)
        out.append(
            ResolvedFlag(
                flag=flag,
                environment=environment,
                enabled=True if s is None else s.enabled,
                constraints=tuple(s.constraints) if s else (),
                reason=s.reason if s else "",
                changed_at=s.changed_at if s else flag.created_at,
                changed_by=(s.changed_by.get_username() if s and s.changed_by else ""),
            )
        )
    return out


class FlagRecovery:
    """What the kill-switch pages ask about the sessions a flag halted.

    Sessions live in the audit app, above governance; it plugs its answers in from
    `AuditConfig.ready()`, so governance never imports audit. Without audit: no halted
    sessions, and enabling a flag resumes nothing.
    """

    def halted_counts(self, *, team) -> dict[tuple[str, int], int]:
        return {}

    def enable_and_resume(self, *, flag, environment, actor, reason: str = "", resume: bool = False):
        return flag_enable(flag=flag, environment=environment, actor=actor, reason=reason), []


flag_recovery = FlagRecovery()
