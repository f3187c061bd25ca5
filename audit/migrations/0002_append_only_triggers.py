"""Append-only audit tables, enforced by the database (triggers per vendor, see audit/db.py)."""

from django.db import migrations

from audit import db as audit_db


def install(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for statement in audit_db.install_sql(schema_editor.connection.vendor):
            cursor.execute(statement)


def uninstall(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for statement in audit_db.uninstall_sql(schema_editor.connection.vendor):
            cursor.execute(statement)


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(install, uninstall, elidable=False),
    ]
