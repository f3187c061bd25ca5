"""`manage.py policy_diff FILE --team SLUG`: what importing FILE would change; exit 1 when it differs.

For a GitOps job: exit 0 means the repository's policy file matches the team's policy, 1 that it
differs (the changes are printed), 2 that the file or the team cannot be used."""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from governance.management.utils import team_by_slug
from governance.services.policy_yaml import PolicyImportError, policy_import


class Command(BaseCommand):
    help = (
        "Show what importing a policy file would change against the team's live policy, without writing "
        "anything. Exit code 0: no difference; 1: the file differs; 2: the file or team is unusable."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The YAML file, or - to read standard input.")
        parser.add_argument("--team", required=True, help="The team's slug.")

    def handle(self, *args, file: str, team: str, **options):
        try:
            target = team_by_slug(team)
        except CommandError as exc:
            raise CommandError(str(exc), returncode=2) from exc
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {file}: {exc}", returncode=2) from exc
        try:
            report = policy_import(team=target, text=text, dry_run=True)
        except PolicyImportError as exc:
            raise CommandError(f"{file} cannot be imported:\n{exc}", returncode=2) from exc
        if not report.changed:
            self.stdout.write(f"No difference: team {target.slug}'s policy matches {file}.")
            return
        self.stdout.write(f"Importing {file} into team {target.slug} would change:")
        self.stdout.write("\n".join(str(c) for c in report.changes))
        totals = ", ".join(f"{report.count(a)} {a}" for a in ("added", "changed", "removed"))
        self.stdout.write(f"In all: {totals}.")
        sys.exit(1)
