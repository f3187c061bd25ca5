"""The key history is append-only, enforced by the database like the audit tables (portal/append_only.py)."""

from django.db import migrations

from portal.append_only import install_sql, uninstall_sql

TABLES = ("governance_signingkeyevent",)  # audit.db.KEY_HISTORY_TABLES


def install(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for statement in install_sql(schema_editor.connection.vendor, TABLES):
            cursor.execute(statement)


def uninstall(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for statement in uninstall_sql(schema_editor.connection.vendor, TABLES):
            cursor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0004_per_team_signing_keys"),
    ]

    operations = [
        migrations.RunPython(install, uninstall, elidable=False),
    ]
