"""Rotate one team's signing key, or retire one of its rotated-out keys."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from governance.choices import SigningKeyStatus
from governance.models import SigningKey
from governance.services.signing import key_history_head, signing_key_retire, signing_key_rotate
from portal.models import Team


class Command(BaseCommand):
    help = (
        "Make a new Ed25519 signing key active for one team; its previous active key stays published "
        "(listed in /api/v1/keys/?team=<slug>) so bundles it signed still verify. With --retire KID, stop "
        "publishing one of the team's rotated-out keys. Other teams' keys are never touched."
    )

    def add_arguments(self, parser):
        parser.add_argument("--team", required=True, metavar="SLUG", help="The team whose key changes.")
        parser.add_argument("--retire", metavar="KID", help="Retire this published key instead of rotating.")

    def handle(self, *args, team=None, retire=None, **options):
        team_row = Team.objects.filter(slug=team).first()
        if team_row is None:
            raise CommandError(f"No team {team!r}.")
        if retire:
            try:
                key = signing_key_retire(team=team_row, kid=retire)
            except ValidationError as exc:
                raise CommandError("; ".join(exc.messages)) from exc
            self.stdout.write(
                f"Retired {key.kid} of team {team_row.slug}. Remove it from its gateways' pinned key files."
            )
        else:
            previous = (
                SigningKey.objects.filter(team=team_row, status=SigningKeyStatus.ACTIVE)
                .values_list("kid", flat=True)
                .first()
            )
            key = signing_key_rotate(team=team_row)
            self.stdout.write(f"Active signing key of team {team_row.slug}: {key.kid}")
            if previous:
                self.stdout.write(f"Still published (verifies older bundles): {previous}")
            self.stdout.write(
                f"Pin the new key on the team's gateways (save /api/v1/keys/?team={team_row.slug} as their "
                "--keys file) before new bundles reach them."
            )
        self.stdout.write(f"Key history head (pin it for verify_audit): {key_history_head()}")
