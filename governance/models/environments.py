"""Environments, their server bindings and forbidden patterns."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from governance.choices import PRODUCTION, Permission, TargetKind
from governance.models.servers import SERVER_SLUG_VALIDATOR
from portal.permissions import team_scoped_manager


class Environment(models.Model):
    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="environments")
    name = models.CharField(max_length=64, validators=[SERVER_SLUG_VALIDATOR])
    description = models.TextField(blank=True)
    is_production = models.BooleanField(default=False)
    requires_authorization = models.BooleanField(
        default=False,
        help_text="Access needs explicit, time-bounded human authorization (always on for production).",
    )
    forbidden_patterns = models.JSONField(default=list, blank=True, help_text="Globs such as *prod*.")
    note = models.TextField(blank=True)
    order = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = team_scoped_manager("team")

    class Meta:
        ordering = ["order", "name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="environment_unique_team_name"),
            # Production access always needs a person's authorization; the database refuses otherwise.
            models.CheckConstraint(
                condition=models.Q(requires_authorization=True)
                | (models.Q(is_production=False) & ~models.Q(name=PRODUCTION)),
                name="production_requires_authorization",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.name == PRODUCTION:
            self.is_production = True
        if self.is_production and not self.requires_authorization:
            raise ValidationError(
                {"requires_authorization": "Production always requires explicit human authorization."}
            )
        if not isinstance(self.forbidden_patterns, list) or not all(
            isinstance(p, str) and p.strip() for p in self.forbidden_patterns
        ):
            raise ValidationError(
                {"forbidden_patterns": "Forbidden patterns must be a list of non-empty globs."}
            )


class ServerBinding(models.Model):
    """A server an environment allows, with where it points and its permission."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="bindings")
    server = models.ForeignKey("governance.McpServer", on_delete=models.CASCADE, related_name="bindings")
    target_kind = models.CharField(max_length=8, choices=TargetKind.choices, default=TargetKind.PATH)
    target = models.CharField(max_length=500, blank=True, help_text="The path or URL the server works on.")
    permission = models.CharField(max_length=16, choices=Permission.choices, default=Permission.READ_ONLY)
    order = models.PositiveSmallIntegerField(default=0)

    objects = team_scoped_manager("environment__team")

    class Meta:
        ordering = ["environment__order", "order", "server__slug"]
        verbose_name = "server binding"
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "server"], name="binding_unique_environment_server"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.environment.name}: {self.server.slug} ({self.permission})"

    def clean(self) -> None:
        if self.environment_id and self.server_id and self.environment.team_id != self.server.team_id:
            raise ValidationError({"server": "The server belongs to another team."})
        if self.target_kind == TargetKind.URL and self.target and "://" not in self.target:
            raise ValidationError({"target": "A URL target needs a scheme, like postgresql://host/db."})
