"""Kill-switch flags (Unleash style): a server capability switched per environment and role."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from governance.choices import Capability, ConstraintOperator
from mcpgov.bundle import FLAG_CONTEXT_NAMES, PORTAL_CONTEXT_NAMES
from portal.permissions import team_scoped_manager

FLAG_NAME_VALIDATOR = RegexValidator(
    r"^[a-z0-9][a-z0-9_.-]*$", "Flag names look like mcp.filesystem.write (lowercase, dots)."
)
# Stored constraints may name the role (the gateway's) or a context the portal decides at compile time.
CONSTRAINT_CONTEXT_NAMES = (*FLAG_CONTEXT_NAMES, *PORTAL_CONTEXT_NAMES)


class Flag(models.Model):
    """`mcp.<server>.<capability>`: when disabled, calls of that capability to that server are refused."""

    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="flags")
    name = models.CharField(max_length=200, validators=[FLAG_NAME_VALIDATOR])
    server = models.ForeignKey("governance.McpServer", on_delete=models.CASCADE, related_name="flags")
    capability = models.CharField(max_length=8, choices=Capability.choices, default=Capability.ALL)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = team_scoped_manager("team")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="flag_unique_team_name"),
            models.UniqueConstraint(fields=["server", "capability"], name="flag_unique_server_capability"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.server_id and self.team_id and self.server.team_id != self.team_id:
            raise ValidationError({"server": "The server belongs to another team."})


class FlagState(models.Model):
    """A flag's strategy in one environment: on/off plus constraints on the context (role IN [...])."""

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="states")
    environment = models.ForeignKey(
        "governance.Environment", on_delete=models.CASCADE, related_name="flag_states"
    )
    enabled = models.BooleanField(default=True)
    constraints = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"context_name": "role", "operator": "IN", "values": ["database_agent"]}]',
    )
    reason = models.CharField(max_length=500, blank=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(auto_now=True)

    objects = team_scoped_manager("flag__team")

    class Meta:
        ordering = ["flag__name", "environment__order"]
        verbose_name = "flag state"
        constraints = [
            models.UniqueConstraint(fields=["flag", "environment"], name="flag_state_once_per_env")
        ]

    def __str__(self) -> str:
        return f"{self.flag.name} in {self.environment.name}: {'on' if self.enabled else 'off'}"

    def clean(self) -> None:
        if self.flag_id and self.environment_id and self.flag.team_id != self.environment.team_id:
            raise ValidationError({"environment": "The environment belongs to another team."})
        validate_constraints(self.constraints)


def validate_constraints(constraints) -> None:
    if not isinstance(constraints, list):
        raise ValidationError({"constraints": "Constraints must be a list."})
    for i, c in enumerate(constraints, 1):
        if not isinstance(c, dict) or set(c) - {"context_name", "operator", "values"}:
            raise ValidationError(
                {"constraints": f"Constraint {i}: needs context_name, operator and values."}
            )
        if c.get("context_name") not in CONSTRAINT_CONTEXT_NAMES:
            raise ValidationError(
                {
                    "constraints": f"Constraint {i}: context_name must be one of {', '.join(CONSTRAINT_CONTEXT_NAMES)}."
                }
            )
        if c.get("operator") not in ConstraintOperator.values:
            raise ValidationError({"constraints": f"Constraint {i}: operator must be IN or NOT_IN."})
        values = c.get("values")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise ValidationError(
                {"constraints": f"Constraint {i}: values must be a non-empty list of names."}
            )
