"""`manage.py flush`, aware of the append-only audit tables.

Django's flush empties every table (TRUNCATE on PostgreSQL, DELETE on SQLite), which the audit
tables' triggers refuse. Flushing is a deliberate wipe of the whole database by an operator,
also run by Django's test framework between transactional tests, so this command lifts the
audit triggers inside the flush's own transaction and restores them before it commits.
"""

from __future__ import annotations

from django.core.management.commands.flush import Command as FlushCommand
from django.db import connections, transaction

from audit import db as audit_db


class Command(FlushCommand):
    def handle(self, **options):
        database = options["database"]
        connection = connections[database]
        before, after = audit_db.suspend_installed_sql(connection)
        with transaction.atomic(using=database):
            with connection.cursor() as cursor:
                for statement in before:
                    cursor.execute(statement)
            super().handle(**options)
            with connection.cursor() as cursor:
                for statement in after:
                    cursor.execute(statement)
