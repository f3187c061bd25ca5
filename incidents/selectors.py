"""Reads for the incident pages. Every query starts from the restricted queryset of the user's team."""

from __future__ import annotations

from django.db.models import Count, Prefetch, QuerySet

from incidents.choices import IncidentStatus
from incidents.models import Incident, IncidentEntry
from portal.models import Team
from portal.permissions import VIEW


def incidents_for_team(*, user, team: Team) -> QuerySet[Incident]:
    return (
        Incident.objects.restrict(user, VIEW)
        .for_team(team)
        .select_related("opened_by")
        .prefetch_related("affected_servers")
    )


def incident_list(*, user, team: Team, status: str = "") -> QuerySet[Incident]:
    """The newest 200, with their timeline length; `status` filters when it names one."""
    incidents = incidents_for_team(user=user, team=team).annotate(entries=Count("timeline"))
    if status in IncidentStatus.values:
        incidents = incidents.filter(status=status)
    return incidents.order_by("-opened_at")[:200]


def incident_detail(*, user, team: Team) -> QuerySet[Incident]:
    """The team's incidents with the timeline and its actors loaded (for get_object_or_404)."""
    return incidents_for_team(user=user, team=team).prefetch_related(
        Prefetch("timeline", queryset=IncidentEntry.objects.select_related("actor"))
    )
