"""Helpers shared by the policy services."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
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


@dataclass(frozen=True)
class NewToken:
    prefix: str  # stored in clear: finds the row
    token: str  # shown once
    sha256: str  # all that is stored of the secret


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_issue(marker: str) -> NewToken:
    """A bearer secret `<marker>_<prefix>_<random>`: enforcement-client tokens and agent API keys."""
    prefix = secrets.token_hex(6)
    token = f"{marker}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewToken(prefix=prefix, token=token, sha256=token_sha256(token))
