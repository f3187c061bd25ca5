"""Change-history rows name what happened (`event_type`); existing rows are back-filled from what they
recorded (object type, action and the summary's wording, as the services of the time wrote them)."""

import re

from django.db import migrations, models

CHOICES = [
    ("team_created", "Team created"),
    ("member_added", "Member added"),
    ("member_role_changed", "Member's role changed"),
    ("member_removed", "Member removed"),
    ("invitation_sent", "Invitation sent"),
    ("invitation_accepted", "Invitation accepted"),
    ("invitation_revoked", "Invitation revoked"),
    ("server_created", "Server added"),
    ("server_updated", "Server changed"),
    ("server_deleted", "Server removed"),
    ("tools_discovered", "Tools discovered"),
    ("tool_updated", "Tool changed"),
    ("tool_report_dismissed", "Tool report dismissed"),
    ("role_created", "Role added"),
    ("role_updated", "Role changed"),
    ("role_deleted", "Role removed"),
    ("role_server_added", "Server put on a role's list"),
    ("role_server_removed", "Server taken off a role's list"),
    ("environment_created", "Environment added"),
    ("environment_updated", "Environment changed"),
    ("environment_deleted", "Environment removed"),
    ("binding_created", "Server bound"),
    ("binding_updated", "Binding changed"),
    ("binding_deleted", "Server unbound"),
    ("global_limits_updated", "Global limits changed"),
    ("server_limits_created", "Server limits set"),
    ("server_limits_updated", "Server limits changed"),
    ("server_limits_deleted", "Server limits removed"),
    ("trigger_settings_updated", "Trigger settings changed"),
    ("policy_imported", "Policy imported"),
    ("flag_created", "Flag added"),
    ("flag_deleted", "Flag removed"),
    ("flag_disabled", "Flag disabled"),
    ("flag_enabled", "Flag enabled"),
    ("flag_constraints_changed", "Flag constraints changed"),
    ("access_requested", "Production access requested"),
    ("access_approved", "Production access approved"),
    ("access_denied", "Production access denied"),
    ("access_revoked", "Production access revoked"),
    ("access_cancelled", "Production access request cancelled"),
    ("access_expired", "Production access expired"),
    ("agent_created", "Agent registered"),
    ("agent_updated", "Agent changed"),
    ("agent_revoked", "Agent revoked"),
    ("agent_key_issued", "Agent API key issued"),
    ("agent_key_revoked", "Agent API key revoked"),
    ("client_created", "Enforcement client registered"),
    ("client_revoked", "Enforcement client revoked"),
    ("client_stale", "Enforcement client not seen"),
    ("session_released", "Session allowed to continue"),
    ("session_ended", "Session ended by a reviewer"),
    ("session_timed_out", "Session ended: gateway stopped reporting"),
    ("call_approved", "Call approved"),
    ("call_denied", "Call denied"),
    ("failed_call_explained", "Failed call explained"),
    ("failed_call_explanation_changed", "Failed-call explanation changed"),
    ("session_acknowledged", "Session log acknowledged"),
    ("digest_sealed", "Audit digest sealed"),
    ("sink_created", "Audit sink created"),
    ("sink_updated", "Audit sink changed"),
    ("sink_deleted", "Audit sink deleted"),
    ("incident_opened", "Incident opened"),
    ("incident_contained", "Incident contained"),
    ("incident_session_linked", "Session linked to an incident"),
    ("incident_root_cause", "Incident root cause recorded"),
    ("incident_resolved", "Incident resolved"),
    ("incident_flags_reenabled", "Incident's flags re-enabled"),
    ("incident_note", "Incident note"),
    ("incident_flag_created", "Flag added to contain an incident"),
    ("other", "Other change"),
]  # frozen: portal.choices.ChangeEventType when written

# (object_type, action) -> event type, or a list of (summary pattern, event type) tried in order.
RULES = {
    ("team", "create"): "team_created",
    ("membership", "create"): "member_added",
    ("membership", "update"): "member_role_changed",
    ("membership", "delete"): "member_removed",
    ("invitation", "create"): "invitation_sent",
    ("invitation", "action"): "invitation_accepted",
    ("invitation", "delete"): "invitation_revoked",
    ("MCP server", "create"): "server_created",
    ("MCP server", "update"): "server_updated",
    ("MCP server", "delete"): "server_deleted",
    ("MCP server", "action"): [
        (r"Tools discovered", "tools_discovered"),
        (r"Reported tool definitions dismissed", "tool_report_dismissed"),
    ],
    ("MCP tool", "update"): "tool_updated",
    ("agent role", "create"): "role_created",
    ("agent role", "update"): [
        (r"\S+ added to \w+ servers of ", "role_server_added"),
        (r"\S+ removed from \w+ servers of ", "role_server_removed"),
        (r"", "role_updated"),
    ],
    ("agent role", "delete"): "role_deleted",
    ("environment", "create"): "environment_created",
    ("environment", "update"): "environment_updated",
    ("environment", "delete"): "environment_deleted",
    ("server binding", "create"): "binding_created",
    ("server binding", "update"): "binding_updated",
    ("server binding", "delete"): "binding_deleted",
    ("global rate limit", "update"): "global_limits_updated",
    ("server rate limit", "create"): "server_limits_created",
    ("server rate limit", "update"): "server_limits_updated",
    ("server rate limit", "delete"): "server_limits_deleted",
    ("trigger settings", "update"): "trigger_settings_updated",
    ("policy", "import"): "policy_imported",
    ("flag", "create"): [(r"Flag \S+ added to contain incident", "incident_flag_created"), (r"", "flag_created")],
    ("flag", "delete"): "flag_deleted",
    ("flag state", "update"): [
        (r"Flag \S+ disabled in ", "flag_disabled"),
        (r"Flag \S+ enabled in ", "flag_enabled"),
        (r"Flag \S+ constraints changed in ", "flag_constraints_changed"),
    ],
    ("production-access request", "create"): "access_requested",
    ("production-access request", "action"): [
        (r"Approved", "access_approved"),
        (r"Denied", "access_denied"),
        (r"Revoked", "access_revoked"),
        (r"Cancelled", "access_cancelled"),
        (r"Expired", "access_expired"),
    ],
    ("agent", "create"): [(r"API key ", "agent_key_issued"), (r"", "agent_created")],
    ("agent", "update"): "agent_updated",
    ("agent", "action"): [(r"API key .* revoked", "agent_key_revoked"), (r"Agent .* revoked", "agent_revoked")],
    ("enforcement client", "create"): "client_created",
    ("enforcement client", "action"): [(r"Gateway went quiet", "client_stale"), (r".* revoked", "client_revoked")],
    ("agent session", "action"): [
        (r"Session allowed to continue", "session_released"),
        (r"Session ended by a reviewer", "session_ended"),
        (r"Session ended .*gateway stopped reporting", "session_timed_out"),
        (r"Call .* approved: ", "call_approved"),
        (r"Call .* denied: ", "call_denied"),
        (r"Session log acknowledged", "session_acknowledged"),
    ],
    ("audit digest", "create"): "digest_sealed",
    ("failed-call explanation", "create"): "failed_call_explained",
    ("failed-call explanation", "update"): "failed_call_explanation_changed",
    ("audit sink", "create"): "sink_created",
    ("audit sink", "update"): "sink_updated",
    ("audit sink", "delete"): "sink_deleted",
    ("incident", "action"): [
        (r"Opened", "incident_opened"),
        (r"Contained", "incident_contained"),
        (r"Session linked", "incident_session_linked"),
        (r"Root cause recorded", "incident_root_cause"),
        (r"Resolved", "incident_resolved"),
        (r"Flags re-enabled", "incident_flags_reenabled"),
        (r"Note", "incident_note"),
    ],
}


def event_type_of(object_type: str, action: str, summary: str) -> str:
    rule = RULES.get((object_type, action))
    if isinstance(rule, list):
        return next((t for pattern, t in rule if re.match(pattern, summary)), "other")
    return rule or "other"


def backfill(apps, schema_editor):
    ChangeRecord = apps.get_model("portal", "ChangeRecord")
    batch = []
    rows = ChangeRecord.objects.only("pk", "object_type", "action", "summary").order_by("pk")
    for row in rows.iterator(chunk_size=2000):
        row.event_type = event_type_of(row.object_type, row.action, row.summary)
        batch.append(row)
        if len(batch) == 2000:
            ChangeRecord.objects.bulk_update(batch, ["event_type"])
            batch = []
    ChangeRecord.objects.bulk_update(batch, ["event_type"])


class Migration(migrations.Migration):
    dependencies = [("portal", "0003_invitations_auditor_only_payloads")]

    operations = [
        migrations.AddField(
            model_name="changerecord",
            name="event_type",
            field=models.CharField(choices=CHOICES, default="other", max_length=40),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="changerecord",
            name="event_type",
            field=models.CharField(
                choices=CHOICES, help_text="What happened (the action follows from it).", max_length=40
            ),
        ),
        migrations.AddIndex(
            model_name="changerecord",
            index=models.Index(fields=["team", "event_type", "-created_at"], name="change_team_event"),
        ),
    ]
