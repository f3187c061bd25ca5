"""`manage.py export_policy --team SLUG`: the team's policy as YAML in the seed's shape, on stdout."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from governance.management.utils import team_by_slug
from governance.services.policy_yaml import policy_export


class Command(BaseCommand):
    help = (
        "Print a team's policy (mcp_access, environments, rate_limits) as YAML; import_policy reads it back."
    )

    def add_arguments(self, parser):
        parser.add_argument("--team", required=True, help="The team's slug.")

    def handle(self, *args, team: str, **options):
        self.stdout.write(policy_export(team=team_by_slug(team)), ending="")
