"""SIEM sinks (AuditSink) and the stream order of audit events.

`xact` is added by hand, per vendor, instead of by AddField: on SQLite Django would rebuild the
table (dropping the append-only triggers), and on PostgreSQL the column's default must be the
inserting transaction's id, which Django's db_default cannot express portably. Existing events
get 0 (no table rewrite); new ones `pg_current_xact_id()` on PostgreSQL, 0 on SQLite.
"""

import django.db.models.deletion
from django.db import migrations, models


def add_xact_column(apps, schema_editor):
    statements = ["ALTER TABLE audit_auditevent ADD COLUMN xact bigint NOT NULL DEFAULT 0"]
    if schema_editor.connection.vendor == "postgresql":
        statements.append(
            "ALTER TABLE audit_auditevent ALTER COLUMN xact SET DEFAULT (pg_current_xact_id()::text)::bigint"
        )
    for statement in statements:
        schema_editor.execute(statement)


def drop_xact_column(apps, schema_editor):
    schema_editor.execute("ALTER TABLE audit_auditevent DROP COLUMN xact")


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0005_auditevent_trace_id'),
        ('portal', '0003_invitations_auditor_only_payloads'),
    ]

    operations = [
        migrations.CreateModel(
            name='AuditSink',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=100)),
                ('kind', models.CharField(choices=[('syslog', 'Syslog (RFC 5424 over TCP)'), ('webhook', 'HTTP webhook')], max_length=8)),
                ('format', models.CharField(choices=[('json', 'Product JSON (docs/audit.md)'), ('ocsf', 'OCSF API Activity (6003)')], default='json', max_length=8)),
                ('enabled', models.BooleanField(default=True)),
                ('host', models.CharField(blank=True, max_length=255)),
                ('port', models.PositiveIntegerField(blank=True, null=True)),
                ('tls', models.BooleanField(default=False)),
                ('ca_file', models.CharField(blank=True, help_text='CA bundle (PEM) on the portal host.', max_length=500)),
                ('url', models.URLField(blank=True, max_length=1000)),
                ('hec', models.BooleanField(default=False, help_text='Splunk HTTP Event Collector mode.')),
                ('secret_header', models.CharField(blank=True, default='X-Mcpgov-Token', max_length=100)),
                ('secret_encrypted', models.TextField(blank=True, help_text='Fernet token of the secret; never shown.')),
                ('cursor_xact', models.BigIntegerField(default=-1)),
                ('cursor_id', models.BigIntegerField(default=0)),
                ('delivered_count', models.PositiveBigIntegerField(default=0)),
                ('last_delivered_at', models.DateTimeField(blank=True, null=True)),
                ('last_error', models.TextField(blank=True)),
                ('last_error_at', models.DateTimeField(blank=True, null=True)),
                ('failures', models.PositiveIntegerField(default=0, help_text='Consecutive failed attempts.')),
                ('next_attempt_at', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'verbose_name': 'audit sink',
                'ordering': ['team', 'name'],
            },
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddField(
                    model_name='auditevent',
                    name='xact',
                    field=models.BigIntegerField(db_default=0, editable=False),
                ),
            ],
            database_operations=[migrations.RunPython(add_xact_column, drop_xact_column)],
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(fields=['xact', 'id'], name='event_stream_order'),
        ),
        migrations.AddField(
            model_name='auditsink',
            name='team',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='audit_sinks', to='portal.team'),
        ),
        migrations.AddConstraint(
            model_name='auditsink',
            constraint=models.UniqueConstraint(fields=('team', 'name'), name='sink_unique_team_name'),
        ),
        migrations.AddConstraint(
            model_name='auditsink',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('kind', 'webhook'), models.Q(('url', ''), _negated=True)), models.Q(('kind', 'syslog'), ('port__isnull', False), models.Q(('host', ''), _negated=True)), _connector='OR'), name='sink_target_matches_kind'),
        ),
    ]
