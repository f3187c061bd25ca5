"""Environments, their bindings and forbidden patterns."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from governance.choices import PRODUCTION
from governance.models import Environment, McpServer, ServerBinding
from governance.services.common import apply_fields, check_policy_perm, policy_changed, save_validated
from governance.services.drafts import draftable
from portal.choices import ChangeEventType
from portal.models import Team
from portal.services import change_record

ENVIRONMENT_FIELDS = (
    "name",
    "description",
    "is_production",
    "requires_authorization",
    "forbidden_patterns",
    "note",
    "order",
)
BINDING_FIELDS = ("target_kind", "target", "permission", "order")


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in data.items() if k in ENVIRONMENT_FIELDS}
    if "forbidden_patterns" in data and isinstance(data["forbidden_patterns"], list):
        data["forbidden_patterns"] = [p.strip() for p in data["forbidden_patterns"] if isinstance(p, str)]
    return data


def _guard_production(env: Environment) -> None:
    if env.name == PRODUCTION or env.is_production:
        env.is_production = True
        if not env.requires_authorization:
            raise ValidationError(
                {
                    "requires_authorization": "Production always requires explicit human authorization; "
                    "it cannot be switched off."
                }
            )


@draftable
@transaction.atomic
def environment_create(*, team: Team, actor=None, **data: Any) -> Environment:
    check_policy_perm(actor, team)
    env = Environment(team=team)
    apply_fields(env, _normalise(data))
    if env.name == PRODUCTION and "requires_authorization" not in data:
        env.requires_authorization = True
    _guard_production(env)
    save_validated(env)
    change_record(
        team=team,
        actor=actor,
        event_type=ChangeEventType.ENVIRONMENT_CREATED,
        obj=env,
        summary=f"Environment {env.name} added",
    )
    policy_changed(team=team, reason=f"environment {env.name} added")
    return env


@draftable
@transaction.atomic
def environment_update(*, environment: Environment, actor=None, **data: Any) -> Environment:
    check_policy_perm(actor, environment.team)
    changes = apply_fields(environment, _normalise(data))
    _guard_production(environment)
    if changes:
        save_validated(environment)
        change_record(
            team=environment.team,
            actor=actor,
            event_type=ChangeEventType.ENVIRONMENT_UPDATED,
            obj=environment,
            changes=changes,
        )
        policy_changed(team=environment.team, reason=f"environment {environment.name} changed")
    return environment


@draftable
@transaction.atomic
def environment_delete(*, environment: Environment, actor=None) -> None:
    check_policy_perm(actor, environment.team)
    if environment.is_production:
        raise ValidationError("The production environment cannot be deleted.")
    team = environment.team
    change_record(team=team, actor=actor, event_type=ChangeEventType.ENVIRONMENT_DELETED, obj=environment)
    environment.delete()
    policy_changed(team=team, reason=f"environment {environment.name} removed")


@draftable
@transaction.atomic
def binding_set(*, environment: Environment, server: McpServer, actor=None, **data: Any) -> ServerBinding:
    """Bind `server` in `environment` (create or update) with its target and permission."""
    check_policy_perm(actor, environment.team)
    if server.team_id != environment.team_id:
        raise ValidationError({"server": "The server belongs to another team."})
    binding = ServerBinding.objects.filter(environment=environment, server=server).first()
    created = binding is None
    if created:
        binding = ServerBinding(environment=environment, server=server)
    changes = apply_fields(binding, {k: v for k, v in data.items() if k in BINDING_FIELDS})
    if created or changes:
        save_validated(binding)
        change_record(
            team=environment.team,
            actor=actor,
            event_type=ChangeEventType.BINDING_CREATED if created else ChangeEventType.BINDING_UPDATED,
            obj=binding,
            summary=f"{server.slug} bound in {environment.name} ({binding.permission})",
            changes=changes,
        )
        policy_changed(team=environment.team, reason=f"binding of {server.slug} in {environment.name}")
    return binding


@draftable
@transaction.atomic
def binding_delete(*, binding: ServerBinding, actor=None) -> None:
    env = binding.environment
    check_policy_perm(actor, env.team)
    change_record(
        team=env.team,
        actor=actor,
        event_type=ChangeEventType.BINDING_DELETED,
        obj=binding,
        summary=f"{binding.server.slug} unbound from {env.name}",
    )
    binding.delete()
    policy_changed(team=env.team, reason=f"{binding.server.slug} unbound from {env.name}")
