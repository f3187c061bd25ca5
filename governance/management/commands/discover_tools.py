"""`manage.py discover_tools --team SLUG --server SLUG`: list a server's tools over MCP and record them."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from governance.management.utils import server_by_slug, team_by_slug
from governance.services.discovery import DiscoveryError, server_discover_tools


class Command(BaseCommand):
    help = (
        "Connect to a catalogue server with the MCP client (its HTTP URL, through the SSRF guard; a stdio "
        "command only in the bubblewrap sandbox, MCPGOV_PORTAL_STDIO_DISCOVERY=sandbox), list its tools and "
        "record them with their read/write class. Admin overrides are kept."
    )

    def add_arguments(self, parser):
        parser.add_argument("--team", required=True, help="The team's slug.")
        parser.add_argument("--server", required=True, help="The server's slug in the team's catalogue.")
        parser.add_argument(
            "--timeout", type=float, default=20.0, help="Seconds to wait for the server (20)."
        )

    def handle(self, *args, team: str, server: str, timeout: float, **options):
        target = server_by_slug(team_by_slug(team), server)
        try:
            report = server_discover_tools(server=target, timeout=timeout)
        except DiscoveryError as exc:
            raise CommandError(f"Discovery of {target.slug} failed, nothing changed: {exc}") from exc
        tools = list(target.tools.order_by("name"))
        changes = "; ".join(f"{what}: {', '.join(names)}" for what, names in report.items() if names)
        self.stdout.write(f"{target.slug}: {len(tools)} tools ({changes or 'no change'}).")
        width = max((len(t.name) for t in tools), default=0)
        for tool in tools:
            note = " (admin override)" if tool.access_class_override else ""
            self.stdout.write(f"  {tool.name:<{width}}  {tool.access_class}{note}")
