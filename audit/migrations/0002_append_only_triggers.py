"""Append-only audit tables, enforced by the database (triggers per vendor, see audit/db.py)."""

from django.db import migrations

from audit.db import APPEND_ONLY_TABLES
from portal.append_only import install_sql, uninstall_sql


def install(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for statement in install_sql(schema_editor.connection.vendor, APPEND_ONLY_TABLES):
            cursor.execute(statement)


def uninstall(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for statement in uninstall_sql(schema_editor.connection.vendor, APPEND_ONLY_TABLES, drop_function=True):
            cursor.execute(statement)


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(install, uninstall, elidable=False),
    ]
