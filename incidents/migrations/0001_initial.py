"""Incidents move out of `governance` into their own app: the same tables, only Django's state moves.

The database keeps `governance_incident`, `governance_incidententry` and
`governance_incident_affected_servers` (the models pin `db_table`), so no row is copied.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('portal', '0001_initial'),
        ('governance', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name='Incident',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('title', models.CharField(max_length=300)),
                        ('severity', models.CharField(choices=[('sev1', 'SEV1 — critical'), ('sev2', 'SEV2 — major'), ('sev3', 'SEV3 — minor'), ('sev4', 'SEV4 — low')], max_length=8)),
                        ('status', models.CharField(choices=[('open', 'Open'), ('contained', 'Contained'), ('resolved', 'Resolved')], default='open', max_length=16)),
                        ('session_ids', models.JSONField(blank=True, default=list, help_text='Agent sessions linked for review.')),
                        ('root_cause', models.TextField(blank=True)),
                        ('opened_at', models.DateTimeField(auto_now_add=True)),
                        ('contained_at', models.DateTimeField(blank=True, null=True)),
                        ('resolved_at', models.DateTimeField(blank=True, null=True)),
                        ('opened_by', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('team', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='incidents', to='portal.team')),
                        ('affected_servers', models.ManyToManyField(blank=True, related_name='incidents', to='governance.mcpserver')),
                    ],
                    options={'db_table': 'governance_incident', 'ordering': ['-opened_at']},
                ),
                migrations.CreateModel(
                    name='IncidentEntry',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('kind', models.CharField(choices=[('opened', 'Opened'), ('contained', 'Contained'), ('session_linked', 'Session linked'), ('root_cause', 'Root cause recorded'), ('resolved', 'Resolved'), ('flags_reenabled', 'Flags re-enabled'), ('note', 'Note')], max_length=20)),
                        ('text', models.TextField(blank=True)),
                        ('detail', models.JSONField(blank=True, default=dict)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('actor', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('incident', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='timeline', to='incidents.incident')),
                    ],
                    options={
                        'db_table': 'governance_incidententry',
                        'verbose_name': 'incident timeline entry',
                        'verbose_name_plural': 'incident timeline entries',
                        'ordering': ['created_at', 'id'],
                    },
                ),
            ],
        ),
    ]
