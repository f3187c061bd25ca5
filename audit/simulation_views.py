"""The draft simulation page: what the team's open draft would have changed over recorded calls."""

from __future__ import annotations

from datetime import timedelta

from django.shortcuts import render
from django.utils import timezone

from audit.services.simulation import draft_simulate
from governance.services.drafts import draft_open
from portal.pages import require_perm, team_view
from portal.permissions import CHANGE_POLICY

WINDOWS = {"1": 1, "7": 7, "30": 30}


@team_view
def draft_simulation(request):
    require_perm(request, CHANGE_POLICY)  # it replays every session's calls of the team
    draft = draft_open(team=request.team)
    days = WINDOWS.get(request.GET.get("days", "7"), 7)
    report = None
    if draft is not None:
        until = timezone.now()
        report = draft_simulate(draft=draft, since=until - timedelta(days=days), until=until)
    return render(
        request,
        "audit/simulation.html",
        {"draft": draft, "report": report, "days": days, "windows": sorted(WINDOWS.values())},
    )
