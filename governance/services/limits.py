"""Rate limits and kill-switch trigger settings."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from governance.models import GlobalRateLimit, McpServer, ServerRateLimit, TriggerSettings
from governance.services.common import apply_fields, check_policy_perm, policy_changed, save_validated
from governance.services.drafts import draftable
from portal.choices import ChangeEventType
from portal.models import Team
from portal.services import change_record

GLOBAL_FIELDS = ("max_calls_per_session", "max_calls_per_minute", "pause_at_percent")
TRIGGER_FIELDS = ("cascade_write_threshold", "large_data_bytes", "production_url_words")


@draftable
@transaction.atomic
def global_limits_set(*, team: Team, actor=None, **data: Any) -> GlobalRateLimit:
    check_policy_perm(actor, team)
    limits, created = GlobalRateLimit.objects.get_or_create(team=team)
    changes = apply_fields(limits, {k: data[k] for k in GLOBAL_FIELDS if k in data})
    if changes or created:
        save_validated(limits)
        change_record(
            team=team,
            actor=actor,
            event_type=ChangeEventType.GLOBAL_LIMITS_UPDATED,
            obj=limits,
            changes=changes,
        )
        policy_changed(team=team, reason="global rate limits changed")
    return limits


@draftable
@transaction.atomic
def server_limits_set(*, team: Team, server: McpServer, actor=None, **data: Any) -> ServerRateLimit:
    check_policy_perm(actor, team)
    limits = ServerRateLimit.objects.filter(team=team, server=server).first()
    created = limits is None
    if created:
        limits = ServerRateLimit(team=team, server=server)
    changes = apply_fields(limits, {k: data[k] for k in ServerRateLimit.FIELDS if k in data})
    if created or changes:
        save_validated(limits)
        change_record(
            team=team,
            actor=actor,
            event_type=ChangeEventType.SERVER_LIMITS_CREATED
            if created
            else ChangeEventType.SERVER_LIMITS_UPDATED,
            obj=limits,
            changes=changes,
        )
        policy_changed(team=team, reason=f"rate limits of {server.slug} changed")
    return limits


@draftable
@transaction.atomic
def server_limits_delete(*, limits: ServerRateLimit, actor=None) -> None:
    check_policy_perm(actor, limits.team)
    change_record(team=limits.team, actor=actor, event_type=ChangeEventType.SERVER_LIMITS_DELETED, obj=limits)
    limits.delete()
    policy_changed(team=limits.team, reason=f"rate limits of {limits.server.slug} removed")


@draftable
@transaction.atomic
def trigger_settings_set(*, team: Team, actor=None, **data: Any) -> TriggerSettings:
    check_policy_perm(actor, team)
    settings_, _ = TriggerSettings.objects.get_or_create(team=team)
    changes = apply_fields(settings_, {k: data[k] for k in TRIGGER_FIELDS if k in data})
    if changes:
        save_validated(settings_)
        change_record(
            team=team,
            actor=actor,
            event_type=ChangeEventType.TRIGGER_SETTINGS_UPDATED,
            obj=settings_,
            changes=changes,
        )
        policy_changed(team=team, reason="trigger settings changed")
    return settings_
