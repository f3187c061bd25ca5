"""`manage.py import_policy FILE --team SLUG [--dry-run]`: import policy YAML in the seed's shape."""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from governance.management.utils import team_by_slug
from governance.services.policy_yaml import PolicyImportError, policy_import


class Command(BaseCommand):
    help = (
        "Import a policy file (the seed's mcp_access, environments and rate_limits blocks, any subset) into a "
        "team. Each block in the file replaces the team's policy for that block. See docs/policy-yaml.md."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The YAML file to import, or - to read standard input.")
        parser.add_argument("--team", required=True, help="The team's slug.")
        parser.add_argument("--dry-run", action="store_true", help="Show what would change; write nothing.")

    def handle(self, *args, file: str, team: str, dry_run: bool, **options):
        target = team_by_slug(team)
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {file}: {exc}") from exc
        try:
            report = policy_import(team=target, text=text, dry_run=dry_run)
        except PolicyImportError as exc:
            raise CommandError(f"{file} was not imported, nothing changed:\n{exc}") from exc
        self.stdout.write("\n".join(report.lines))
