"""Agent roles and their allowlists (default deny: anything not allowed is refused)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from governance.choices import RuleKind
from governance.models.servers import SERVER_SLUG_VALIDATOR
from portal.permissions import team_scoped_manager


class AgentRole(models.Model):
    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="agent_roles")
    name = models.CharField(max_length=100, validators=[SERVER_SLUG_VALIDATOR])
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = team_scoped_manager("team")

    class Meta:
        ordering = ["name"]
        verbose_name = "agent role"
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="role_unique_team_name")]

    def __str__(self) -> str:
        return self.name

    def server_slugs(self, kind: str) -> list[str]:
        return sorted(rule.server.slug for rule in self.rules.all() if rule.kind == kind)


class RoleServerRule(models.Model):
    """One server on a role's allowlist or forbidden list; a server is never on both (unique)."""

    role = models.ForeignKey(AgentRole, on_delete=models.CASCADE, related_name="rules")
    server = models.ForeignKey("governance.McpServer", on_delete=models.CASCADE, related_name="role_rules")
    kind = models.CharField(max_length=16, choices=RuleKind.choices)

    objects = team_scoped_manager("role__team")

    class Meta:
        ordering = ["role__name", "kind", "server__slug"]
        verbose_name = "role server rule"
        constraints = [
            models.UniqueConstraint(fields=["role", "server"], name="rule_server_once_per_role"),
        ]

    def __str__(self) -> str:
        return f"{self.role.name}: {self.kind} {self.server.slug}"

    def clean(self) -> None:
        if self.role_id and self.server_id and self.role.team_id != self.server.team_id:
            raise ValidationError({"server": "The server belongs to another team."})
