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


def review_incident_suggestions(team: Team, since, until):
    """The quarterly review's suggestions from incidents (audit/services/reviews.py asks every source it
    was given): each server affected by an incident opened in the period, to tighten (read-only)."""
    from audit.choices import SuggestionKind
    from audit.services.reviews import Suggestion

    by_server: dict[str, list[Incident]] = {}
    incidents = (
        Incident.objects.filter(team=team, opened_at__gte=since, opened_at__lt=until)
        .prefetch_related("affected_servers")
        .order_by("opened_at", "pk")
    )
    for incident in incidents:
        for server in incident.affected_servers.all():
            by_server.setdefault(server.slug, []).append(incident)
    return [
        Suggestion(
            SuggestionKind.INCIDENT_SERVER,
            f"{slug} was involved in "
            + ", ".join(f"incident #{i.pk} ({i.get_severity_display()}: {i.title})" for i in found)
            + ": tighten it to read_only where it can write.",
            server=slug,
        )
        for slug, found in sorted(by_server.items())
    ]
