"""Create a team (with its default environments) and its first admin: `create_team --slug --name --admin`."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from governance.services.teams import team_create_with_admin
from portal.services import invitation_url


class Command(BaseCommand):
    help = (
        "Create a team and make USERNAME_OR_EMAIL its admin. An email without an account gets an "
        "admin invitation; its link is printed once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--slug", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--admin", required=True, metavar="USERNAME_OR_EMAIL")

    def handle(self, *args, slug, name, admin, **options):
        try:
            team, token = team_create_with_admin(slug=slug, name=name, admin=admin, actor=None)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(f"Team {team.slug} ({team.name}) created.")
        if token is None:
            self.stdout.write(f"{admin} is its admin.")
        else:
            self.stdout.write(
                f"{admin} has no account yet: send them this admin invitation link (single use):"
            )
            self.stdout.write(invitation_url(token))
