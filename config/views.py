"""The dashboard: the one page that reads every app (which is why it lives above them all)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from governance.models import AgentRole, Environment, McpServer
from portal.models import ChangeRecord, Team


def dashboard_summary(*, team: Team) -> dict:
    return {
        "servers": McpServer.objects.for_team(team).count(),
        "roles": AgentRole.objects.for_team(team).count(),
        "environments": Environment.objects.for_team(team).count(),
        "recent_changes": ChangeRecord.objects.filter(team=team).select_related("actor")[:10],
    }


@login_required
def dashboard(request):
    if not request.team:  # a lazy object: test its truth, not its identity
        return render(request, "portal/no_team.html")
    return render(request, "portal/dashboard.html", {"summary": dashboard_summary(team=request.team)})
