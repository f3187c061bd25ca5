"""Production-access requests, their reviews, and the time-bounded grants they become."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from governance.choices import AccessRequestStatus
from portal.permissions import team_scoped_manager


class AccessRequest(models.Model):
    """A requester asks for servers in an environment for a role, for a bounded window.

    Approved, it is a grant carried in the bundle with its end time, so it stops
    working at `ends_at` even if no task runs.
    """

    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="access_requests")
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="access_requests"
    )
    environment = models.ForeignKey(
        "governance.Environment", on_delete=models.PROTECT, related_name="access_requests"
    )
    role = models.ForeignKey("governance.AgentRole", on_delete=models.PROTECT, related_name="access_requests")
    servers = models.ManyToManyField("governance.McpServer", related_name="access_requests")
    reason = models.TextField()
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    status = models.CharField(
        max_length=16, choices=AccessRequestStatus.choices, default=AccessRequestStatus.PENDING
    )
    approvals_required = models.PositiveSmallIntegerField(default=1)
    review_deadline = models.DateTimeField(help_text="Unreviewed requests expire at this time.")
    decided_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoke_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = team_scoped_manager("team")

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "production-access request"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ends_at__gt=models.F("starts_at")), name="access_window_positive"
            ),
            models.CheckConstraint(condition=~models.Q(reason=""), name="access_reason_required"),
        ]
        indexes = [models.Index(fields=["team", "status", "ends_at"], name="access_live_lookup")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.role} → {self.environment} ({self.status})"

    def clean(self) -> None:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": "The end must be after the start."})
        if not (self.reason or "").strip():
            raise ValidationError({"reason": "A reason is required."})


class AccessReview(models.Model):
    """One reviewer's decision on a request (a reviewer decides once)."""

    class Decision(models.TextChoices):
        APPROVE = "approve", "Approve"
        DENY = "deny", "Deny"

    request = models.ForeignKey(AccessRequest, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=8, choices=Decision.choices)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = team_scoped_manager("request__team")

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["request", "reviewer"], name="review_once_per_reviewer")
        ]

    def __str__(self) -> str:
        return f"{self.reviewer} {self.decision}s #{self.request_id}"
