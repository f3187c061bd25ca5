"""Reads for the web shell."""

from __future__ import annotations

from portal.models import ChangeRecord, Team


def dashboard_summary(*, team: Team) -> dict:
    from governance.models import AgentRole, Environment, McpServer

    return {
        "servers": McpServer.objects.for_team(team).count(),
        "roles": AgentRole.objects.for_team(team).count(),
        "environments": Environment.objects.for_team(team).count(),
        "recent_changes": ChangeRecord.objects.filter(team=team).select_related("actor")[:10],
    }


def invitations_pending(*, team: Team):
    """The team's open invitations (not used, revoked or expired), newest first."""
    from django.utils import timezone

    from portal.models import Invitation

    return (
        Invitation.objects.filter(team=team, accepted_at=None, revoked_at=None, expires_at__gt=timezone.now())
        .select_related("invited_by")
        .order_by("-created_at")
    )
