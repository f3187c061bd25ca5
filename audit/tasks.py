"""Celery tasks of the audit app. They take ids, are safe to run twice, and call services."""

from __future__ import annotations

from celery import shared_task

from audit.services.digests import audit_chains_seal
from audit.services.exports import audit_export_recent
from audit.services.rollup import activity_rollup_advance_all
from audit.services.sinks import digest_copies_write
from audit.services.streaming import sink_deliver
from portal.models import Team


@shared_task(name="audit.seal_audit_chains")
def seal_audit_chains(team_id: int | None = None) -> list[int]:
    """Write a signed digest for every team (or one) whose session chains grew since its last digest."""
    teams = Team.objects.filter(pk=team_id) if team_id is not None else Team.objects.order_by("pk")
    numbers = []
    for team in teams:
        digest = audit_chains_seal(team=team)
        if digest is not None:
            numbers.append(digest.number)
    digest_copies_write()  # the retry of copies a sink missed earlier (no-op without sinks)
    return numbers


@shared_task(name="audit.copy_digests")
def copy_digests() -> dict[str, int]:
    """Write every digest that a configured sink (MCPGOV_DIGEST_SINKS) does not hold yet."""
    return digest_copies_write()


@shared_task(name="audit.export_audit_logs")
def export_audit_logs(days: int = 7) -> list[str]:
    """Archive each complete UTC day of the last `days` days to MCPGOV_AUDIT_EXPORT_DIR (once per day)."""
    return [str(path) for path in audit_export_recent(days=days)]


@shared_task(name="audit.deliver_audit_sink")
def deliver_audit_sink(sink_id: int, max_batches: int | None = None) -> dict:
    """Send one SIEM sink's next batches after its cursor (a no-op while another run holds it)."""
    result = sink_deliver(sink_id=sink_id, max_batches=max_batches)
    return {"delivered": result.delivered, "outcome": result.outcome, "error": result.error}


@shared_task(name="audit.deliver_audit_sinks")
def deliver_audit_sinks() -> list[int]:
    """Beat: queue a delivery for every enabled sink whose backoff has passed (ids queued)."""
    from django.db.models import Q
    from django.utils import timezone

    from audit.models import AuditSink

    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now())
    ids = list(AuditSink.objects.filter(due, enabled=True).order_by("pk").values_list("pk", flat=True))
    for pk in ids:
        deliver_audit_sink.delay(pk)
    return ids


@shared_task(name="audit.end_stale_sessions")
def end_stale_sessions(stale_minutes: int | None = None) -> list[str]:
    """End sessions whose gateway stopped reporting for MCPGOV_SESSION_STALE_MINUTES (ids ended)."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from audit.services.sessions import session_end_stale, stale_sessions

    minutes = settings.MCPGOV_SESSION_STALE_MINUTES if stale_minutes is None else stale_minutes
    before = timezone.now() - timedelta(minutes=minutes)
    ended = []
    for session_id in stale_sessions(before=before).values_list("pk", flat=True).iterator():
        if session_end_stale(session_id=session_id, before=before) is not None:
            ended.append(str(session_id))
    return ended


@shared_task(name="audit.open_quarterly_reviews")
def open_quarterly_reviews() -> list[int]:
    """Open each team's allowlist review of the quarter that ended last (at most one per team and quarter,
    so the hourly beat opens it in the first hour of a quarter and does nothing after)."""
    from audit.services.reviews import reviews_open_quarterly

    return [review.pk for review in reviews_open_quarterly()]


@shared_task(name="audit.roll_up_activity")
def roll_up_activity() -> int:
    """Add the events stored since the last run to the activity page's hourly rollup (every team)."""
    return sum(advance.rows for advance in activity_rollup_advance_all())
