"""Helpers shared by the policy services."""

from __future__ import annotations

from typing import Any

from django.db import models, transaction

from portal.models import Team
from portal.permissions import CHANGE_POLICY, require_team_perm
from portal.services import diff_fields


def check_policy_perm(actor, team: Team) -> None:
    """Services are called by views, the API, imports and tasks; `actor=None` means the system."""
    if actor is not None:
        require_team_perm(actor, CHANGE_POLICY, team)


def policy_changed(*, team: Team, reason: str = "") -> None:
    """Policy of `team` changed: rebuild its bundles once the transaction commits (debounced)."""
    from governance import tasks

    transaction.on_commit(lambda: tasks.schedule_bundle_rebuild(team_id=team.pk, reason=reason))


def apply_fields(instance: models.Model, data: dict[str, Any]) -> dict[str, list[Any]]:
    """Set fields from `data` on `instance`; return {field: [old, new]} of what changed."""
    changes = diff_fields(instance, data)
    for field, value in data.items():
        setattr(instance, field, value)
    return changes


def save_validated(instance: models.Model) -> None:
    instance.full_clean()
    instance.save()
