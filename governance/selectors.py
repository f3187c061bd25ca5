"""Reads for the policy UI. Every query starts from the restricted queryset of the user's team."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils import timezone

from governance.choices import DEFAULT_PRODUCTION_URL_WORDS, RuleKind
from governance.models import (
    AccessRequest,
    AccessReview,
    Agent,
    AgentApiKey,
    AgentRole,
    EnforcementClient,
    Environment,
    Flag,
    FlagState,
    GlobalRateLimit,
    McpServer,
    McpTool,
    PolicyBundle,
    RoleServerRule,
    ServerBinding,
    ServerRateLimit,
    TriggerSettings,
)
from governance.services.bundles import latest_versions
from portal.choices import ChangeEventType
from portal.models import ChangeRecord, Team
from portal.permissions import MANAGE_CLIENTS, VIEW, teams_for_user


def servers_for_team(*, user, team: Team) -> QuerySet[McpServer]:
    return McpServer.objects.restrict(user, VIEW).for_team(team)


def server_list(*, user, team: Team, category: str = "") -> QuerySet[McpServer]:
    servers = servers_for_team(user=user, team=team).annotate(
        tool_count=Count("tools", distinct=True),
        write_tool_count=Count(
            "tools",
            filter=Q(tools__access_class_override="write")
            | (Q(tools__access_class_override="") & ~Q(tools__read_only_hint=True)),
            distinct=True,
        ),
    )
    if category:
        servers = servers.filter(category=category)
    return servers.order_by("slug")


def server_detail(*, user, team: Team, pk: int) -> QuerySet[McpServer]:
    """The one server (as a queryset for get_object_or_404) with its tools and limits loaded."""
    return (
        servers_for_team(user=user, team=team)
        .filter(pk=pk)
        .select_related("team")
        .prefetch_related(
            Prefetch("tools", queryset=McpTool.objects.order_by("name")),
            Prefetch(
                "role_rules", queryset=RoleServerRule.objects.select_related("role").order_by("role__name")
            ),
            Prefetch("bindings", queryset=ServerBinding.objects.select_related("environment")),
        )
    )


def tools_for_team(*, user, team: Team) -> QuerySet[McpTool]:
    return McpTool.objects.restrict(user, VIEW).filter(server__team=team).select_related("server__team")


def role_list(*, user, team: Team) -> QuerySet[AgentRole]:
    return (
        AgentRole.objects.restrict(user, VIEW)
        .for_team(team)
        .prefetch_related(
            Prefetch(
                "rules", queryset=RoleServerRule.objects.select_related("server").order_by("server__slug")
            )
        )
    )


def roles_for_team(*, user, team: Team) -> QuerySet[AgentRole]:
    return AgentRole.objects.restrict(user, VIEW).for_team(team).select_related("team")


@dataclass
class RoleRules:
    allowed: list[RoleServerRule]
    forbidden: list[RoleServerRule]
    # Servers that may still be added to each list (not already on that list).
    addable_to_allowed: QuerySet[McpServer]
    addable_to_forbidden: QuerySet[McpServer]
    kind_of: dict[int, str]


def role_rules(*, user, role: AgentRole) -> RoleRules:
    rules = list(
        RoleServerRule.objects.restrict(user, VIEW)
        .filter(role=role)
        .select_related("server")
        .order_by("server__slug")
    )
    servers = servers_for_team(user=user, team=role.team).order_by("slug")
    by_kind = {kind: [r for r in rules if r.kind == kind] for kind in RuleKind.values}
    return RoleRules(
        allowed=by_kind[RuleKind.ALLOWED],
        forbidden=by_kind[RuleKind.FORBIDDEN],
        addable_to_allowed=servers.exclude(pk__in=[r.server_id for r in by_kind[RuleKind.ALLOWED]]),
        addable_to_forbidden=servers.exclude(pk__in=[r.server_id for r in by_kind[RuleKind.FORBIDDEN]]),
        kind_of={r.server_id: r.kind for r in rules},
    )


def rules_for_team(*, user, team: Team) -> QuerySet[RoleServerRule]:
    return (
        RoleServerRule.objects.restrict(user, VIEW)
        .filter(role__team=team)
        .select_related("role__team", "server")
    )


def environment_list(*, user, team: Team) -> QuerySet[Environment]:
    return Environment.objects.restrict(user, VIEW).for_team(team).annotate(binding_count=Count("bindings"))


def environments_for_team(*, user, team: Team) -> QuerySet[Environment]:
    return Environment.objects.restrict(user, VIEW).for_team(team).select_related("team")


def environment_bindings(*, user, environment: Environment) -> QuerySet[ServerBinding]:
    return (
        ServerBinding.objects.restrict(user, VIEW)
        .filter(environment=environment)
        .select_related("server")
        .order_by("order", "server__slug")
    )


def bindings_for_team(*, user, team: Team) -> QuerySet[ServerBinding]:
    return (
        ServerBinding.objects.restrict(user, VIEW)
        .filter(environment__team=team)
        .select_related("environment__team", "server")
    )


@dataclass
class LimitsOverview:
    global_limits: GlobalRateLimit
    triggers: TriggerSettings
    server_limits: list[ServerRateLimit]
    servers_without_limits: QuerySet[McpServer]


def limits_overview(*, user, team: Team) -> LimitsOverview:
    """The team's limits; global limits and trigger settings not saved yet come back with their defaults."""
    global_limits = GlobalRateLimit.objects.restrict(user, VIEW).for_team(team).first() or GlobalRateLimit(
        team=team
    )
    triggers = TriggerSettings.objects.restrict(user, VIEW).for_team(team).first()
    if triggers is None:
        triggers = TriggerSettings(team=team, production_url_words=list(DEFAULT_PRODUCTION_URL_WORDS))
    server_limits = list(server_limits_for_team(user=user, team=team).order_by("server__slug"))
    return LimitsOverview(
        global_limits=global_limits,
        triggers=triggers,
        server_limits=server_limits,
        servers_without_limits=servers_for_team(user=user, team=team).exclude(
            pk__in=[limit.server_id for limit in server_limits]
        ),
    )


def server_limits_for_team(*, user, team: Team) -> QuerySet[ServerRateLimit]:
    return ServerRateLimit.objects.restrict(user, VIEW).for_team(team).select_related("server", "team")


def change_history(*, team: Team, event_types: list[str] | None = None) -> QuerySet[ChangeRecord]:
    qs = ChangeRecord.objects.filter(team=team)
    if event_types:
        qs = qs.filter(event_type__in=event_types)
    return qs.select_related("actor").order_by("-created_at", "-id")


def changes_for_user(*, user) -> QuerySet[ChangeRecord]:
    """The change history of every team `user` may see (the API's list)."""
    return (
        ChangeRecord.objects.filter(team__in=teams_for_user(user, VIEW))
        .select_related("actor", "team")
        .order_by("-created_at", "-id")
    )


# --- production access ----------------------------------------------------------------------------


def access_requests_for_team(*, user, team: Team) -> QuerySet[AccessRequest]:
    return (
        AccessRequest.objects.restrict(user, VIEW)
        .for_team(team)
        .select_related("requester", "environment", "role", "revoked_by")
        .prefetch_related(
            "servers", Prefetch("reviews", queryset=AccessReview.objects.select_related("reviewer"))
        )
    )


def access_request_history(*, team: Team, access_request: AccessRequest) -> QuerySet[ChangeRecord]:
    return (
        ChangeRecord.objects.filter(
            team=team, object_type=AccessRequest._meta.verbose_name, object_id=str(access_request.pk)
        )
        .select_related("actor")
        .order_by("created_at", "id")
    )


# --- flags (the kill-switch panel) ----------------------------------------------------------------


def flags_for_team(*, user, team: Team) -> QuerySet[Flag]:
    return Flag.objects.restrict(user, VIEW).for_team(team).select_related("server", "team")


def environments_in_order(*, user, team: Team) -> QuerySet[Environment]:
    return Environment.objects.restrict(user, VIEW).for_team(team).order_by("order", "name")


@dataclass
class FlagPanel:
    environments: list[Environment]
    rows: list[dict]  # {"flag": Flag, "cells": [{"env": Environment, "state": FlagState | None}]}


def flag_panel(*, user, team: Team) -> FlagPanel:
    """Every flag in every environment, with its state (None: on, never changed) — three queries."""
    environments = list(environments_in_order(user=user, team=team))
    flags = list(flags_for_team(user=user, team=team).order_by("name"))
    states = {
        (s.flag_id, s.environment_id): s
        for s in FlagState.objects.filter(flag__in=flags).select_related("changed_by")
    }
    rows = [
        {
            "flag": flag,
            "cells": [{"env": env, "state": states.get((flag.pk, env.pk))} for env in environments],
        }
        for flag in flags
    ]
    return FlagPanel(environments=environments, rows=rows)


def flag_states(*, flag: Flag) -> dict[int, FlagState]:
    """{environment id: state} of one flag."""
    return {s.environment_id: s for s in flag.states.select_related("changed_by")}


# The rows of one flag's history, by what they record: the flag itself, or one of its environment states.
_FLAG_EVENTS = (
    ChangeEventType.FLAG_CREATED,
    ChangeEventType.FLAG_DELETED,
    ChangeEventType.INCIDENT_FLAG_CREATED,
)
_FLAG_STATE_EVENTS = (
    ChangeEventType.FLAG_DISABLED,
    ChangeEventType.FLAG_ENABLED,
    ChangeEventType.FLAG_CONSTRAINTS_CHANGED,
)


def flag_history(*, team: Team, flag: Flag) -> QuerySet[ChangeRecord]:
    """The flag's change history, newest first (by event type and object, never by summary text: a
    flag of the same name deleted earlier, or a summary that happens to start alike, is not this flag's)."""
    state_ids = [str(pk) for pk in flag.states.values_list("pk", flat=True)]
    return (
        ChangeRecord.objects.filter(team=team)
        .filter(
            Q(event_type__in=_FLAG_EVENTS, object_id=str(flag.pk))
            | Q(event_type__in=_FLAG_STATE_EVENTS, object_id__in=state_ids)
        )
        .select_related("actor")[:50]
    )


def gateway_rows(*, team: Team, stale_after: timedelta, now: datetime | None = None) -> list[dict]:
    """The team's active enforcement clients with whether each is stale (not seen for `stale_after`)."""
    now = now or timezone.now()
    limit = now - stale_after
    clients = (
        EnforcementClient.objects.for_team(team).filter(revoked_at__isnull=True).select_related("environment")
    )
    rows = []
    for c in clients:
        if c.expires_at is not None and c.expires_at <= now:
            continue
        # Never connected is "not deployed yet", not stale (as in the stale-gateway emails).
        rows.append({"client": c, "stale": c.last_seen_at is not None and c.last_seen_at < limit})
    return rows


# --- bundles and enforcement clients --------------------------------------------------------------


def bundles_for_team(*, user, team: Team) -> QuerySet[PolicyBundle]:
    return PolicyBundle.objects.restrict(user).for_team(team)


def client_rows(*, user, team: Team, now: datetime | None = None) -> list[dict]:
    """The team's enforcement clients with their state, roles and whether they run an old bundle (three queries)."""
    clients = list(
        EnforcementClient.objects.restrict(user, MANAGE_CLIENTS)
        .for_team(team)
        .select_related("environment", "created_by")
        .prefetch_related("roles")
    )
    latest = latest_versions(list({c.environment_id for c in clients}))
    now = now or timezone.now()
    rows = []
    for c in clients:
        if c.revoked_at is not None:
            state = "revoked"
        elif c.expires_at is not None and c.expires_at <= now:
            state = "expired"
        else:
            state = "active"
        rows.append(
            {
                "client": c,
                "state": state,
                "latest": latest.get(c.environment_id),
                "behind": bool(c.bundle_version) and latest.get(c.environment_id, 0) > c.bundle_version,
            }
        )
    return rows


def agents_for_team(*, user, team: Team) -> QuerySet[Agent]:
    """The team's agents with their OAuth client, roles, environments and keys (four queries for a list)."""
    return (
        Agent.objects.restrict(user, VIEW)
        .for_team(team)
        .select_related("application", "created_by")
        .prefetch_related("roles", "environments", Prefetch("api_keys", queryset=AgentApiKey.objects.all()))
    )


def client_suggested_role(*, client: EnforcementClient) -> tuple[AgentRole | None, list[str]]:
    """The role the "client registered" page writes into its gateway snippet, and the other choices.

    The client's own roles when it is restricted to some; otherwise the team's roles. Preferred:
    the first (by name) with an allowed server bound in the client's environment, so the snippet
    runs something.
    """
    roles = list(client.roles.order_by("name")) or list(
        AgentRole.objects.for_team(client.team).order_by("name")
    )
    bound = set(
        RoleServerRule.objects.filter(
            role__in=roles, kind=RuleKind.ALLOWED, server__bindings__environment=client.environment
        ).values_list("role_id", flat=True)
    )
    runnable = [r for r in roles if r.pk in bound]
    chosen = (runnable or roles or [None])[0]
    return chosen, [r.name for r in roles if r != chosen]
