"""Policy drafts: a team's pending policy edits, published as one bundle version (docs/policy-lifecycle.md)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from governance.choices import DraftStatus
from portal.permissions import TeamScopedQuerySet


class PolicyDraftQuerySet(TeamScopedQuerySet):
    team_path = "team"

    def open_for(self, team) -> PolicyDraft | None:
        return self.filter(team=team, status=DraftStatus.OPEN).first()


class PolicyDraft(models.Model):
    """The edits a team made since its last publish, kept as an ordered list of service calls.

    The live policy rows are not touched until the draft is published: then the changes are
    applied in order, through the same services, in one transaction, and every environment
    whose bundle changed gets exactly one new version.
    """

    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="policy_drafts")
    status = models.CharField(max_length=10, choices=DraftStatus.choices, default=DraftStatus.OPEN)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    title = models.CharField(max_length=200, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    close_reason = models.CharField(max_length=500, blank=True)
    published_versions = models.JSONField(
        default=dict, blank=True, help_text="{environment name: bundle version} made by the publish."
    )

    objects = models.Manager.from_queryset(PolicyDraftQuerySet)()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["team"], condition=models.Q(status="open"), name="one_open_policy_draft_per_team"
            )
        ]

    def __str__(self) -> str:
        return f"Draft {self.pk} of {self.team_id} ({self.status})"


class PolicyDraftChange(models.Model):
    """One edit in a draft: the service (`operation`) and its arguments, objects named by natural key."""

    draft = models.ForeignKey(PolicyDraft, on_delete=models.CASCADE, related_name="changes")
    position = models.PositiveIntegerField()
    operation = models.CharField(max_length=64)
    arguments = models.JSONField(default=dict)
    summary = models.CharField(max_length=500, blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["draft", "position"]
        constraints = [
            models.UniqueConstraint(fields=["draft", "position"], name="policy_draft_change_position")
        ]

    def __str__(self) -> str:
        return self.summary or self.operation


class ShadowBundle(models.Model):
    """A draft's bundle of one environment, signed like the live one (its own JWS type) and served beside it:
    gateways decide every call with it too and record what it would have done, without enforcing it.

    At most one per environment; the team's shadow comes from one draft and goes when that draft is
    published (promoted) or discarded, or when an admin drops it."""

    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="shadow_bundles")
    environment = models.OneToOneField(
        "governance.Environment", on_delete=models.CASCADE, related_name="shadow_bundle"
    )
    draft = models.ForeignKey(PolicyDraft, on_delete=models.CASCADE, related_name="shadow_bundles")
    draft_changes = models.PositiveIntegerField(help_text="The draft's changes when it was shadowed.")
    version = models.PositiveIntegerField(help_text="The live version it was compiled beside.")
    content = models.JSONField()
    jws = models.TextField()
    etag = models.CharField(max_length=64)
    kid = models.CharField(max_length=100)
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = models.Manager.from_queryset(PolicyDraftQuerySet)()

    class Meta:
        ordering = ["team", "environment"]

    def __str__(self) -> str:
        return f"Shadow of draft {self.draft_id} in {self.environment_id}"
