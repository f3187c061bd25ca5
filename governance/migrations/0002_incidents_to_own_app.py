"""Incident and IncidentEntry now belong to the `incidents` app (incidents/migrations/0001);
only Django's state changes here, the tables stay where they are."""

from django.db import migrations


def content_types_follow(apps, schema_editor):
    """Permissions and object grants keep pointing at the same models under their new app."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in ("incident", "incidententry"):
        if not ContentType.objects.filter(app_label="incidents", model=model).exists():
            ContentType.objects.filter(app_label="governance", model=model).update(app_label="incidents")


class Migration(migrations.Migration):

    dependencies = [
        ('governance', '0001_initial'),
        ('incidents', '0001_initial'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.RemoveField(model_name='incident', name='affected_servers'),
                migrations.DeleteModel(name='IncidentEntry'),
                migrations.DeleteModel(name='Incident'),
            ],
        ),
        migrations.RunPython(content_types_follow, migrations.RunPython.noop),
    ]
