"""Reads for the web shell."""

from __future__ import annotations

from django.utils import timezone

from portal.models import Invitation, Team


def invitations_pending(*, team: Team):
    """The team's open invitations (not used, revoked or expired), newest first."""
    return (
        Invitation.objects.filter(team=team, accepted_at=None, revoked_at=None, expires_at__gt=timezone.now())
        .select_related("invited_by")
        .order_by("-created_at")
    )
