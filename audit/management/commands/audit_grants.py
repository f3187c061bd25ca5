"""`manage.py audit_grants`: give the application's database role exactly the rights it needs.

Run after every `migrate`, as the owner role (docs/deploy.md). Idempotent. The app role is the
user of the `default` database (DATABASE_URL) unless --role names another; --create-role creates
it (password: MCPGOV_APP_DB_PASSWORD, else DATABASE_URL's). Nothing to do on SQLite (no roles).
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections, transaction

from audit.db import INSERT_ONLY_TABLES, RoleError, app_role_setup


class Command(BaseCommand):
    help = "Grant the app's database role INSERT/SELECT only on audit rows (run as the owner, after migrate)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--database",
            default="owner" if "owner" in settings.DATABASES else "default",
            help="The owner's connection (default: 'owner' when DATABASE_OWNER_URL is set).",
        )
        parser.add_argument("--role", help="The app role (default: DATABASE_URL's user).")
        parser.add_argument("--create-role", action="store_true", help="Create the role if it is missing.")

    def handle(self, *args, **options):
        connection = connections[options["database"]]
        if connection.vendor != "postgresql":
            self.stdout.write(f"{connection.vendor}: no database roles; nothing to grant.")
            return
        default = settings.DATABASES["default"]
        role = options.get("role") or default.get("USER")
        if not role:
            raise CommandError("No app role: pass --role or set DATABASE_URL with a user.")
        password = os.environ.get("MCPGOV_APP_DB_PASSWORD") or (
            default.get("PASSWORD") if role == default.get("USER") else None
        )
        try:
            with transaction.atomic(using=options["database"]):
                ran = app_role_setup(
                    connection, role=role, create=options["create_role"], password=password or None
                )
        except RoleError as exc:
            raise CommandError(str(exc)) from exc
        if options["verbosity"] >= 2:
            for statement in ran:
                self.stdout.write(statement)
        self.stdout.write(
            f"Role {role!r}: SELECT/INSERT only on {', '.join(INSERT_ONLY_TABLES)}; "
            "read-only django_migrations; full DML elsewhere; owns nothing."
        )
