"""Rotate the bundle-signing key, or retire a rotated-out key."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from governance.choices import SigningKeyStatus
from governance.models import SigningKey
from governance.services.signing import signing_key_retire, signing_key_rotate


class Command(BaseCommand):
    help = (
        "Make a new Ed25519 signing key active; the previous active key stays published (listed in "
        "/api/v1/keys/) so bundles it signed still verify. With --retire KID, stop publishing a rotated-out key."
    )

    def add_arguments(self, parser):
        parser.add_argument("--retire", metavar="KID", help="Retire this published key instead of rotating.")

    def handle(self, *args, retire=None, **options):
        if retire:
            try:
                key = signing_key_retire(kid=retire)
            except ValidationError as exc:
                raise CommandError("; ".join(exc.messages)) from exc
            self.stdout.write(f"Retired {key.kid}. Remove it from the gateways' pinned key files.")
            return
        previous = (
            SigningKey.objects.filter(status=SigningKeyStatus.ACTIVE).values_list("kid", flat=True).first()
        )
        key = signing_key_rotate()
        self.stdout.write(f"Active signing key: {key.kid}")
        if previous:
            self.stdout.write(f"Still published (verifies older bundles): {previous}")
        self.stdout.write(
            "Pin the new key on the gateways (save /api/v1/keys/ as their --keys file) before new bundles reach them."
        )
