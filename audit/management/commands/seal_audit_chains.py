"""`manage.py seal_audit_chains`: write signed digests now (beat does it every MCPGOV_SEAL_INTERVAL_SECONDS)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from audit.tasks import seal_audit_chains


class Command(BaseCommand):
    help = "Seal every team's grown audit chains into a signed digest."

    def handle(self, *args, **options):
        numbers = seal_audit_chains()
        self.stdout.write(f"{len(numbers)} digest(s) written.")
