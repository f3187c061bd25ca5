"""Signing keys, signed policy bundles, and the enforcement clients that pull them."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from governance.choices import SigningKeyEventType, SigningKeyStatus
from portal.permissions import team_scoped_manager


class SigningKey(models.Model):
    """A team's Ed25519 key. The private half is encrypted at rest and never leaves the server.

    Keys carried over from the single pre-team key set (migration 0002) keep only their public
    half (`private_key_encrypted` empty): they verify old bundles and digests and never sign again.
    """

    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="signing_keys")
    kid = models.CharField(max_length=64)
    public_key = models.CharField(max_length=100, help_text="Raw public key, base64url.")
    private_key_encrypted = models.TextField(
        blank=True, help_text="Fernet token of the raw private key; empty for a verify-only key."
    )
    status = models.CharField(
        max_length=16, choices=SigningKeyStatus.choices, default=SigningKeyStatus.ACTIVE
    )
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    objects = team_scoped_manager("team")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["team", "kid"], name="signing_key_unique_team_kid"),
            models.UniqueConstraint(
                fields=["team"],
                condition=models.Q(status=SigningKeyStatus.ACTIVE),
                name="one_active_signing_key_per_team",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kid} ({self.status})"


class SigningKeyEvent(models.Model):
    """One row of the append-only, hash-chained key history (created / rotated / retired).

    The chain is global (one head for an operator to pin) and each row names its team. It
    outlives keys and teams: `team` is a plain reference without a database constraint, and
    `team_slug` is recorded for people. The database refuses UPDATE and DELETE (migration 0003).
    `verify_audit` trusts a key for a team's digests only as this history describes it.
    """

    seq = models.PositiveBigIntegerField(unique=True, help_text="1, 2, 3… over the whole portal.")
    team = models.ForeignKey(
        "portal.Team", on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    team_slug = models.CharField(max_length=64)
    kid = models.CharField(max_length=64)
    public_key = models.CharField(max_length=100, help_text="Raw public key, base64url.")
    event = models.CharField(max_length=16, choices=SigningKeyEventType.choices)
    at = models.DateTimeField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"#{self.seq} {self.team_slug}/{self.kid} {self.event}"


class PolicyBundle(models.Model):
    """One signed version of a team's policy for one environment. Old versions are kept."""

    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="bundles")
    environment = models.ForeignKey(
        "governance.Environment", on_delete=models.CASCADE, related_name="bundles"
    )
    version = models.PositiveIntegerField()
    content_hash = models.CharField(max_length=64, help_text="sha256 of the canonical policy content.")
    content = models.JSONField(help_text="The policy part of the payload (what the diff compares).")
    jws = models.TextField(help_text="JWS compact serialization of the canonical payload.")
    etag = models.CharField(max_length=64, help_text="sha256 of the JWS.")
    kid = models.CharField(max_length=64)
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    reason = models.CharField(max_length=500, blank=True, help_text="What changed, for the version list.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = team_scoped_manager("team")

    class Meta:
        ordering = ["environment__order", "-version"]
        get_latest_by = "version"
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "version"], name="bundle_unique_environment_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.team.slug}/{self.environment.name} v{self.version}"


class FlagsUpdate(models.Model):
    """A signed flags update (`mcpgov.flags/1`): every flag of one environment, issued on a toggle and
    served on the bundle long poll, so gateways switch without downloading a bundle (docs/flags.md).

    `revision` increases by one per environment; `bundle_version` is the latest bundle when it was
    issued (issuing holds the environment's row lock, as publishing does, so a bundle with a higher
    version was built after this update and carries its flags)."""

    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="flags_updates")
    environment = models.ForeignKey(
        "governance.Environment", on_delete=models.CASCADE, related_name="flags_updates"
    )
    revision = models.PositiveIntegerField()
    bundle_version = models.PositiveIntegerField()
    jws = models.TextField(help_text="JWS compact serialization (typ mcpgov-flags+jws).")
    kid = models.CharField(max_length=64)
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    reason = models.CharField(max_length=500, blank=True)

    objects = team_scoped_manager("team")

    class Meta:
        ordering = ["environment__order", "-revision"]
        get_latest_by = "revision"
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "revision"], name="flags_update_unique_environment_revision"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.team.slug}/{self.environment.name} flags r{self.revision}"


class EnforcementClient(models.Model):
    """A registered gateway: its token reaches only its own team's and environment's bundle."""

    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="clients")
    environment = models.ForeignKey(
        "governance.Environment", on_delete=models.CASCADE, related_name="clients"
    )
    name = models.CharField(max_length=200)
    token_prefix = models.CharField(
        max_length=16, unique=True, help_text="Public part of the token, for lookup."
    )
    token_hash = models.CharField(
        max_length=64, help_text="sha256 of the whole token; the token is never stored."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_seen_address = models.GenericIPAddressField(null=True, blank=True)
    bundle_version = models.PositiveIntegerField(
        null=True, blank=True, help_text="The version it last reported."
    )
    # The roles its gateways may enforce (a session with another role is refused).
    roles = models.ManyToManyField("governance.AgentRole", related_name="clients", blank=True)

    objects = team_scoped_manager("team")

    class Meta:
        ordering = ["environment__order", "name"]
        verbose_name = "enforcement client"
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="client_unique_team_name")]

    def __str__(self) -> str:
        return self.name
