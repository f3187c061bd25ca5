"""`manage.py verify_audit [--team SLUG]`: recompute every audit chain and check every digest.

Prints each event (session, seq) or digest that was altered, removed, inserted or renumbered,
and exits non-zero when anything is wrong.
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from audit.services.digests import audit_verify
from portal.models import Team


class Command(BaseCommand):
    help = "Recompute every audit hash chain and check the signed digests; non-zero exit on any problem."

    def add_arguments(self, parser):
        parser.add_argument("--team", help="Only this team (slug).")

    def handle(self, *args, **options):
        team = None
        if options.get("team"):
            team = Team.objects.filter(slug=options["team"]).first()
            if team is None:
                raise CommandError(f"No team {options['team']!r}.")
        sessions, digests, problems = audit_verify(team=team)
        for problem in problems:
            self.stdout.write(str(problem))
        summary = f"Checked {sessions} session chain(s) and {digests} digest(s): "
        if problems:
            self.stdout.write(self.style.ERROR(summary + f"{len(problems)} problem(s)."))
            sys.exit(1)
        self.stdout.write(self.style.SUCCESS(summary + "all intact."))
