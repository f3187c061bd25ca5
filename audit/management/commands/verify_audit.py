"""`manage.py verify_audit [--team SLUG] [--pinned-key-head HASH] [--against-dir DIR] [--against-syslog FILE]`.

Recomputes every audit chain and checks every digest against the signing-key history (each
key trusted only while the history shows it published; the pinned head defaults to the
MCPGOV_PINNED_KEY_HEAD setting); reports events no digest covers although they are older than
the seal interval; with --against-dir / --against-syslog, compares the database's digests with
the external write-once copy (docs/audit.md). Prints each event (session, seq), digest or
key-history row that was altered, removed, inserted or renumbered, and exits non-zero when
anything is wrong.
"""

from __future__ import annotations

import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from audit.services.digests import audit_verify
from audit.services.sinks import load_directory_copy, load_syslog_copy
from portal.models import Team


class Command(BaseCommand):
    help = "Recompute every audit hash chain and check the signed digests; non-zero exit on any problem."

    def add_arguments(self, parser):
        parser.add_argument("--team", help="Only this team (slug).")
        parser.add_argument(
            "--against-dir",
            action="append",
            default=[],
            metavar="DIR",
            help="Compare with the digest copies of a dir: sink (missing, extra or different digests).",
        )
        parser.add_argument(
            "--against-syslog",
            action="append",
            default=[],
            metavar="FILE",
            help="Compare with the digest copies in a syslog file written by a syslog sink.",
        )
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
        copies = {}
        try:
            for path in options["against_dir"]:
                copies[f"the copy in {path}"] = load_directory_copy(path)
            for path in options["against_syslog"]:
                copies[f"the syslog copy {path}"] = load_syslog_copy(path)
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        pinned = options.get("pinned_key_head") or getattr(settings, "MCPGOV_PINNED_KEY_HEAD", "")
        sessions, digests, problems = audit_verify(
            team=team, copies=copies, pinned_key_head=pinned.strip().lower() or None
        )
        for problem in problems:
            self.stdout.write(str(problem))
        summary = f"Checked {sessions} session chain(s) and {digests} digest(s): "
        if problems:
            self.stdout.write(self.style.ERROR(summary + f"{len(problems)} problem(s)."))
            sys.exit(1)
        self.stdout.write(self.style.SUCCESS(summary + "all intact."))
