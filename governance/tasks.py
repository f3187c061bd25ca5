"""Celery tasks for policy. Tasks receive ids, are safe to run twice, and call services."""

from __future__ import annotations


def schedule_bundle_rebuild(*, team_id: int, reason: str = "") -> None:
    """Debounce point for bundle rebuilds after a policy change (wired up with the bundle builder)."""
    return None
