"""Linked sessions become a real relation to audit.AgentSession (they were a JSON list of ids).

Ids that name no session of the incident's team (there should be none: the service checked)
are kept on the timeline entry that linked them, not carried into the relation.
"""

from django.db import migrations, models


def ids_to_relation(apps, schema_editor):
    Incident = apps.get_model("incidents", "Incident")
    AgentSession = apps.get_model("audit", "AgentSession")
    for incident in Incident.objects.exclude(session_ids=[]).iterator():
        sessions = AgentSession.objects.filter(pk__in=incident.session_ids, team_id=incident.team_id)
        incident.sessions.add(*sessions)


def relation_to_ids(apps, schema_editor):
    Incident = apps.get_model("incidents", "Incident")
    for incident in Incident.objects.all().iterator():
        incident.session_ids = [str(pk) for pk in incident.sessions.values_list("pk", flat=True)]
        incident.save(update_fields=["session_ids"])


class Migration(migrations.Migration):

    dependencies = [
        ('incidents', '0001_initial'),
        ('audit', '0003_acknowledgement_last_seq_session_sealed_seq'),
    ]

    operations = [
        migrations.AddField(
            model_name='incident',
            name='sessions',
            field=models.ManyToManyField(blank=True, help_text='Agent sessions linked for review.', related_name='incidents', to='audit.agentsession'),
        ),
        migrations.RunPython(ids_to_relation, relation_to_ids),
        migrations.RemoveField(model_name='incident', name='session_ids'),
    ]
