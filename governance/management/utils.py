"""Helpers shared by the governance management commands."""

from __future__ import annotations

from django.core.management.base import CommandError

from governance.models import McpServer
from portal.models import Team


def team_by_slug(slug: str) -> Team:
    team = Team.objects.filter(slug=slug).first()
    if team is None:
        known = ", ".join(Team.objects.values_list("slug", flat=True)) or "none yet"
        raise CommandError(f"No team with slug {slug!r} (teams: {known}).")
    return team


def server_by_slug(team: Team, slug: str) -> McpServer:
    server = McpServer.objects.filter(team=team, slug=slug).first()
    if server is None:
        known = ", ".join(McpServer.objects.filter(team=team).values_list("slug", flat=True)) or "none yet"
        raise CommandError(f"Team {team.slug} has no server {slug!r} (servers: {known}).")
    return server
