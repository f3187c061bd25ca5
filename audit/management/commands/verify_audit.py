"""`manage.py verify_audit [--team SLUG] [--pinned-key-head HASH]`: recompute every audit chain and check every digest.

Prints each event (session, seq) or digest that was altered, removed, inserted or renumbered,
each key-history row that does not add up, and exits non-zero when anything is wrong. The
pinned key-history head defaults to the MCPGOV_PINNED_KEY_HEAD setting.
"""

from __future__ import annotations

import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from audit.services.digests import audit_verify
from portal.models import Team


class Command(BaseCommand):
    help = "Recompute every audit hash chain and check the signed digests; non-zero exit on any problem."

    def add_arguments(self, parser):
        parser.add_argument("--team", help="Only this team (slug).")
        parser.add_argument(
            "--pinned-key-head",
            metavar="HASH",
            help="The signing-key history head pinned out of band (`manage.py signing_keys --head`); "
            "default: the MCPGOV_PINNED_KEY_HEAD setting.",
        )

    def handle(self, *args, **options):
        team = None
        if options.get("team"):
            team = Team.objects.filter(slug=options["team"]).first()
            if team is None:
                raise CommandError(f"No team {options['team']!r}.")
        pinned = options.get("pinned_key_head") or getattr(settings, "MCPGOV_PINNED_KEY_HEAD", "")
        sessions, digests, problems = audit_verify(team=team, pinned_key_head=pinned.strip().lower() or None)
        for problem in problems:
            self.stdout.write(str(problem))
        summary = f"Checked {sessions} session chain(s) and {digests} digest(s): "
        if problems:
            self.stdout.write(self.style.ERROR(summary + f"{len(problems)} problem(s)."))
            sys.exit(1)
        self.stdout.write(self.style.SUCCESS(summary + "all intact."))
