"""Register an enforcement client and print its token (shown once)."""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from governance.models import AgentRole, Environment
from governance.services.clients import client_create
from portal.models import Team


class Command(BaseCommand):
    help = "Register an enforcement client (gateway) for one team and environment; prints its token once."

    def add_arguments(self, parser):
        parser.add_argument("--team", required=True, help="Team slug.")
        parser.add_argument("--env", required=True, help="Environment name, e.g. production.")
        parser.add_argument("--name", required=True, help="Client name, unique in the team.")
        parser.add_argument(
            "--expires-days", type=int, default=None, help="Token lifetime in days (default: none)."
        )
        parser.add_argument(
            "--role",
            action="append",
            dest="roles",
            default=None,
            help="A role its gateways may enforce (repeat for several; default: every role the team has).",
        )

    def handle(self, *args, team, env, name, expires_days, roles=None, **options):
        team_obj = Team.objects.filter(slug=team).first()
        if team_obj is None:
            raise CommandError(f"No team {team!r}.")
        environment = Environment.objects.filter(team=team_obj, name=env).first()
        if environment is None:
            names = ", ".join(Environment.objects.filter(team=team_obj).values_list("name", flat=True))
            raise CommandError(f"Team {team} has no environment {env!r} (it has: {names}).")
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days must be at least 1.")
        expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
        role_objs = None
        if roles is not None:
            role_objs = list(AgentRole.objects.filter(team=team_obj, name__in=roles))
            missing = sorted(set(roles) - {r.name for r in role_objs})
            if missing:
                have = ", ".join(AgentRole.objects.filter(team=team_obj).values_list("name", flat=True))
                raise CommandError(
                    f"Team {team} has no role {', '.join(missing)} (it has: {have or 'none'})."
                )
        try:
            issued = client_create(
                team=team_obj, environment=environment, name=name, expires_at=expires_at, roles=role_objs
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stderr.write(
            f"Registered client {name} for {team}/{env}"
            + (f", expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else "")
            + ". The token below is shown only once:"
        )
        self.stdout.write(issued.token)
