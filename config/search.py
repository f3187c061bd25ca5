"""The global search box: servers, tools, roles, sessions (by id or its first characters), tickets
and incidents of the current team, each hit a link to its page. Reads only the team's rows."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q
from django.urls import reverse

from audit.selectors import sessions_with_id_prefix
from governance.models import AccessRequest, AgentRole, McpServer, McpTool
from incidents.models import Incident

PER_KIND = 10


@dataclass(frozen=True)
class Hit:
    kind: str
    label: str
    detail: str
    url: str


def search(*, team, query: str) -> list[Hit]:
    q = query.strip()
    if not q:
        return []
    hits: list[Hit] = []
    for s in (
        McpServer.objects.for_team(team)
        .filter(Q(slug__icontains=q) | Q(name__icontains=q))
        .order_by("slug")[:PER_KIND]
    ):
        hits.append(
            Hit(
                "Server",
                s.slug,
                s.name or s.get_category_display(),
                reverse("governance:server-detail", args=[s.pk]),
            )
        )
    tools = (
        McpTool.objects.filter(server__team=team, name__icontains=q).select_related("server").order_by("name")
    )
    for t in tools[:PER_KIND]:
        hits.append(
            Hit(
                "Tool",
                f"{t.server.slug}.{t.name}",
                t.access_class,
                reverse("governance:server-detail", args=[t.server_id]),
            )
        )
    for r in AgentRole.objects.for_team(team).filter(name__icontains=q).order_by("name")[:PER_KIND]:
        hits.append(
            Hit("Agent role", r.name, r.description[:80], reverse("governance:role-detail", args=[r.pk]))
        )
    sessions = sessions_with_id_prefix(team=team, text=q)
    if sessions is not None:
        for s in sessions.select_related("environment")[:PER_KIND]:
            hits.append(
                Hit(
                    "Session",
                    s.short_id,
                    f"{s.role} in {s.environment.name}, {s.get_state_display().lower()}",
                    reverse("audit:session-detail", args=[s.pk]),
                )
            )
    number = q.lstrip("#")
    tickets = AccessRequest.objects.for_team(team).select_related("requester")
    tickets = tickets.filter(pk=int(number)) if number.isdigit() else tickets.filter(reason__icontains=q)
    for a in tickets.order_by("-created_at")[:PER_KIND]:
        hits.append(
            Hit(
                "Ticket",
                f"#{a.pk}",
                f"{a.get_status_display()}: {a.reason[:80]}",
                reverse("governance:access-detail", args=[a.pk]),
            )
        )
    incidents = Incident.objects.filter(team=team)
    incidents = incidents.filter(pk=int(number)) if number.isdigit() else incidents.filter(title__icontains=q)
    for i in incidents.order_by("-pk")[:PER_KIND]:
        hits.append(
            Hit(
                "Incident",
                f"#{i.pk} {i.title}",
                i.get_severity_display(),
                reverse("incidents:incident-detail", args=[i.pk]),
            )
        )
    return hits
