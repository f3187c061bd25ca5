"""Agents: the identities that call tools through a gateway (docs/enforcer-api.md, "Agent identity").

Each agent is an OAuth client of the portal (a django-oauth-toolkit `Application`) and may also have
static API keys. It is bound to the roles and environments it may use; the bundle carries that binding.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from governance.models.servers import SERVER_SLUG_VALIDATOR
from portal.permissions import team_scoped_manager


class Agent(models.Model):
    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=200)
    slug = models.CharField(max_length=100, validators=[SERVER_SLUG_VALIDATOR])
    roles = models.ManyToManyField("governance.AgentRole", related_name="agents", blank=True)
    environments = models.ManyToManyField("governance.Environment", related_name="agents", blank=True)
    application = models.OneToOneField(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="agent",
        help_text="Its OAuth client at the portal.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = team_scoped_manager("team")

    class Meta:
        ordering = ["slug"]
        constraints = [models.UniqueConstraint(fields=["team", "slug"], name="agent_unique_team_slug")]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_interactive(self) -> bool:
        """An authorization code (+ PKCE) client, used by a person; otherwise a headless one."""
        return (
            self.application is not None and self.application.authorization_grant_type == "authorization-code"
        )


class AgentApiKey(models.Model):
    """A static per-agent key (`mcpgov_agent_<prefix>_<secret>`); only its sha256 is stored."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="api_keys")
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = team_scoped_manager("agent__team")

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.agent} key {self.prefix}"


class AgentRevokedToken(models.Model):
    """An access token revoked before it expired: its jti rides in the bundle until `expires_at`."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="revoked_tokens")
    jti = models.CharField(max_length=64)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(auto_now_add=True)

    objects = team_scoped_manager("agent__team")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["jti"], name="revoked_token_unique_jti")]

    def __str__(self) -> str:
        return self.jti
