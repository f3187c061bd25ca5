"""The key history is append-only, enforced by the database like the audit tables (audit/db.py)."""

from django.db import migrations

from audit import db as audit_db


def install(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for statement in audit_db.install_sql(schema_editor.connection.vendor, audit_db.KEY_HISTORY_TABLES):
            cursor.execute(statement)


def uninstall(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for statement in audit_db.uninstall_sql(schema_editor.connection.vendor, audit_db.KEY_HISTORY_TABLES):
            cursor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0004_per_team_signing_keys"),
    ]

    operations = [
        migrations.RunPython(install, uninstall, elidable=False),
    ]
