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
