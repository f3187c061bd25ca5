"""Incidents: contain (disable flags) → review the audit → root cause → resolve (re-enable).

The tables keep the names they had when incidents lived in `governance` (`db_table`), so
moving the app changed no data.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from incidents.choices import IncidentStatus, Severity
from portal.permissions import team_scoped_manager


class Incident(models.Model):
    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="incidents")
    title = models.CharField(max_length=300)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    status = models.CharField(max_length=16, choices=IncidentStatus.choices, default=IncidentStatus.OPEN)
    affected_servers = models.ManyToManyField("governance.McpServer", related_name="incidents", blank=True)
    sessions = models.ManyToManyField(
        "audit.AgentSession",
        related_name="incidents",
        blank=True,
        help_text="Agent sessions linked for review.",
    )
    root_cause = models.TextField(blank=True)
    opened_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    opened_at = models.DateTimeField(auto_now_add=True)
    contained_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    objects = team_scoped_manager("team")

    class Meta:
        db_table = "governance_incident"
        ordering = ["-opened_at"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"


class IncidentEntry(models.Model):
    """One line of an incident's timeline (who, when, what)."""

    class Kind(models.TextChoices):
        OPENED = "opened", "Opened"
        CONTAINED = "contained", "Contained"
        SESSION_LINKED = "session_linked", "Session linked"
        ROOT_CAUSE = "root_cause", "Root cause recorded"
        RESOLVED = "resolved", "Resolved"
        FLAGS_REENABLED = "flags_reenabled", "Flags re-enabled"
        NOTE = "note", "Note"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="timeline")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.TextField(blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = team_scoped_manager("incident__team")

    class Meta:
        db_table = "governance_incidententry"
        ordering = ["created_at", "id"]
        verbose_name = "incident timeline entry"
        verbose_name_plural = "incident timeline entries"

    def __str__(self) -> str:
        return f"{self.incident_id}: {self.kind}"
