"""`manage.py signing_keys [--team SLUG] [--head]`: the signing-key history, and its head to pin."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from governance.keyhistory import format_at
from governance.models import SigningKeyEvent
from governance.services.signing import key_history_verify
from portal.models import Team


class Command(BaseCommand):
    help = (
        "List the append-only signing-key history (created / rotated / retired, per team) and print its "
        "head hash. Pin the head out of band and give it to `verify_audit --pinned-key-head` "
        "(or MCPGOV_PINNED_KEY_HEAD). Non-zero exit when the history's own chain does not verify."
    )

    def add_arguments(self, parser):
        parser.add_argument("--team", metavar="SLUG", help="Only list this team's key events.")
        parser.add_argument("--head", action="store_true", help="Print only the head hash.")

    def handle(self, *args, team=None, head=False, **options):
        history = key_history_verify()
        if history.problems:
            for problem in history.problems:
                where = f"row #{problem.seq}: " if problem.seq is not None else ""
                self.stderr.write(f"{problem.kind.upper()}: {where}{problem.message}")
            raise CommandError("The signing-key history does not verify: do not pin its head.")
        if head:
            self.stdout.write(history.head)
            return
        rows = SigningKeyEvent.objects.order_by("seq")
        if team:
            team_row = Team.objects.filter(slug=team).first()
            if team_row is None:
                raise CommandError(f"No team {team!r}.")
            rows = rows.filter(team=team_row)
        for row in rows:
            self.stdout.write(
                f"#{row.seq} {format_at(row.at)} {row.team_slug} {row.kid} {row.event} {row.hash}"
            )
        self.stdout.write(f"{history.events} key event(s); head {history.head}")
