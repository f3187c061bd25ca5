"""Celery tasks for policy. Tasks receive ids, are safe to run twice, and call services.

Bundle rebuilds are debounced: `schedule_bundle_rebuild` (called on commit of every policy
write) sets a per-team "rebuild pending" marker in Redis and enqueues one rebuild with a
short countdown; writes that arrive while the marker is set only add their reason. The task
clears the marker *before* reading the policy, so a write committed after that schedules
the next rebuild. Without a broker (eager mode) the rebuild runs at once, in-process.
"""

from __future__ import annotations

import logging
from functools import cache

from celery import shared_task
from django.conf import settings

logger = logging.getLogger(__name__)

DEBOUNCE_SECONDS = 1.0  # settings.MCPGOV_BUNDLE_REBUILD_DEBOUNCE_SECONDS overrides it
PENDING_TTL_SECONDS = 120  # a lost task must not block rebuilds for longer than this


def _pending_key(team_id: int) -> str:
    return f"mcpgov:bundle-rebuild:pending:{team_id}"


def _reasons_key(team_id: int) -> str:
    return f"mcpgov:bundle-rebuild:reasons:{team_id}"


@cache
def _redis_for(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _debounce() -> float:
    return float(getattr(settings, "MCPGOV_BUNDLE_REBUILD_DEBOUNCE_SECONDS", DEBOUNCE_SECONDS))


def _redis():
    """Redis for the debounce marker: REDIS_URL, else a Redis broker; None when there is neither."""
    url = settings.REDIS_URL or (
        settings.CELERY_BROKER_URL if settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""
    )
    return _redis_for(url) if url else None


def _rebuild_now(team_id: int, reason: str) -> None:
    from governance.services.bundles import team_bundles_rebuild

    try:
        team_bundles_rebuild(team_id=team_id, reason=reason)
    except Exception:  # the policy write has committed; the periodic refresh retries
        logger.exception("Bundle rebuild for team %s failed", team_id)


def schedule_bundle_rebuild(*, team_id: int, reason: str = "", delay: float | None = None) -> None:
    """Rebuild the team's bundles soon (called on commit of a policy change; debounced by `delay`
    seconds, settings.MCPGOV_BUNDLE_REBUILD_DEBOUNCE_SECONDS by default). A write that finds a rebuild
    already pending joins it, whatever its own delay."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        _rebuild_now(team_id, reason or "policy changed")
        return
    try:
        r = _redis()
        if r is None:
            rebuild_team_bundles.apply_async(
                kwargs={"team_id": team_id, "reason": reason},
                countdown=_debounce() if delay is None else delay,
            )
            return
        pipe = r.pipeline()
        if reason:
            pipe.rpush(_reasons_key(team_id), reason)
            pipe.expire(_reasons_key(team_id), 3600)
        pipe.set(_pending_key(team_id), "1", nx=True, ex=PENDING_TTL_SECONDS)
        first = pipe.execute()[-1]
        if first:
            rebuild_team_bundles.apply_async(
                kwargs={"team_id": team_id}, countdown=_debounce() if delay is None else delay
            )
    except Exception:
        # Broker or Redis unreachable: do not lose the change — rebuild in this process.
        logger.warning(
            "Could not enqueue the bundle rebuild for team %s; rebuilding inline", team_id, exc_info=True
        )
        r = None
        try:
            r = _redis()
            if r is not None:
                r.delete(_pending_key(team_id))
        except Exception:
            logger.debug("Redis unavailable for the pending marker", exc_info=True)
        _rebuild_now(team_id, reason or "policy changed")


@shared_task(name="governance.tasks.rebuild_team_bundles", acks_late=True)
def rebuild_team_bundles(team_id: int, reason: str = "") -> dict[str, int]:
    """Publish new bundle versions for every environment of the team whose policy changed."""
    from governance.services.bundles import team_bundles_rebuild
    from portal.models import Team

    reasons = [reason] if reason else []
    r = _redis()
    if r is not None:
        pipe = r.pipeline()
        pipe.delete(_pending_key(team_id))  # before reading the policy: later writes schedule again
        pipe.lrange(_reasons_key(team_id), 0, -1)
        pipe.delete(_reasons_key(team_id))
        _, queued, _ = pipe.execute()
        reasons += [item.decode() for item in queued]
    if not Team.objects.filter(pk=team_id).exists():
        return {}
    merged = "; ".join(dict.fromkeys(reasons)) or "policy changed"
    results = team_bundles_rebuild(team_id=team_id, reason=merged)
    return {r.bundle.environment.name: r.bundle.version for r in results if r.created}


@shared_task(name="governance.tasks.refresh_bundles")
def refresh_bundles() -> int:
    """Re-issue bundles past half their lifetime and drop ended grants; returns how many were published."""
    from governance.services.bundles import bundles_refresh

    return sum(1 for result in bundles_refresh() if result.created)


@shared_task(name="governance.tasks.prune_flags_updates")
def prune_flags_updates() -> int:
    """Delete signed flags updates superseded by a bundle, beyond the latest few per environment."""
    from governance.services.flag_updates import flags_updates_prune

    return flags_updates_prune()


# --- production access and gateway health (services: governance/services/access.py, notifications.py) ---


@shared_task(name="governance.tasks.expire_access_requests")
def expire_access_requests() -> int:
    """Pending requests past their review deadline and grants past their end → expired (idempotent)."""
    from governance.services.access import access_requests_expire

    return access_requests_expire()


@shared_task(name="governance.tasks.notify_stale_clients")
def notify_stale_clients() -> int:
    """Email reviewers once about gateways that stopped contacting the portal."""
    from governance.services.notifications import stale_clients_notify

    return stale_clients_notify()


# --- the team's outgoing webhook (service: governance/services/webhooks.py) --------------------


@shared_task(
    name="governance.tasks.deliver_team_webhook",
    bind=True,
    max_retries=8,
    acks_late=True,
)
def deliver_team_webhook(self, team_id: int, kind: str, payload: dict) -> int | None:
    """Deliver one message; a failure the receiver may recover from is retried with backoff
    (2 s doubling to 10 minutes, with jitter), a refusal is logged and dropped."""
    import random

    from governance.services.webhooks import WebhookFailed, WebhookRefused, webhook_deliver

    try:
        return webhook_deliver(team_id=team_id, payload=payload)
    except WebhookRefused as exc:
        logger.warning("Webhook %s of team %s not delivered: %s", kind, team_id, exc)
        return None
    except WebhookFailed as exc:
        delay = min(2 * 2**self.request.retries, 600)
        raise self.retry(exc=exc, countdown=delay * random.uniform(0.5, 1.0)) from exc  # noqa: S311 - jitter
