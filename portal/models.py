"""Teams (the tenant), memberships with team roles, and the change history of every write."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from portal.choices import ChangeEventType, MembershipSource, TeamRole

SLUG_VALIDATOR = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]*$", "Use lowercase letters, digits, '_' and '-', starting with a letter or digit."
)

# The largest production-access window any team may allow (the product's hard cap).
MAX_ACCESS_WINDOW_HOURS = 14 * 24


class Team(models.Model):
    """The tenant: every policy object belongs to exactly one team."""

    slug = models.CharField(max_length=64, unique=True, validators=[SLUG_VALIDATOR])
    name = models.CharField(max_length=200)
    bundle_ttl_seconds = models.PositiveIntegerField(
        default=24 * 3600,
        validators=[MinValueValidator(60), MaxValueValidator(30 * 24 * 3600)],
        help_text="How long a signed bundle stays valid; gateways fail closed after it expires.",
    )
    max_access_window_hours = models.PositiveIntegerField(
        default=8,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_ACCESS_WINDOW_HOURS)],
        help_text="Longest production-access window a request may ask for (14 days at most).",
    )
    access_request_review_minutes = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1)],
        help_text="A production-access request nobody reviews expires after this long.",
    )
    production_requires_two_approvers = models.BooleanField(default=False)
    webhook_url = models.URLField(
        max_length=500,
        blank=True,
        help_text='Incoming-webhook URL (Slack, Mattermost, Teams workflows: JSON with a "text" field) for '
        "halts, approvals and incidents; empty: none.",
    )
    policy_edits_immediate = models.BooleanField(
        default=True,
        help_text="Policy edits publish at once. Off: they collect in a draft that is reviewed and published "
        "as one version (docs/policy-lifecycle.md).",
    )
    policy_drafts_require_second_approver = models.BooleanField(
        default=False,
        help_text="A draft that changes a production bundle needs the approval of an admin who did not "
        "author it before it can be published.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("change_policy", "Edit servers, roles, environments, limits, triggers and flags"),
            ("manage_members", "Add and remove team members"),
            ("manage_clients", "Register and revoke enforcement clients"),
            ("acknowledge_session", "Acknowledge agent session logs"),
            ("release_session", "Allow halted or paused sessions to continue, or end them"),
            ("view_payloads", "See audit argument and result payloads (auditor)"),
            ("request_access", "File production-access requests"),
            ("review_access", "Approve, deny and revoke production-access requests"),
            ("toggle_flags", "Flip kill-switch flags"),
            ("manage_incidents", "Open, contain and resolve incidents"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(max_access_window_hours__lte=MAX_ACCESS_WINDOW_HOURS),
                name="team_access_window_at_most_14_days",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user's role in a team. Permissions follow from the role (see portal.permissions)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=TeamRole.choices)
    is_auditor = models.BooleanField(
        default=False, help_text="Auditors see audit argument and result payloads; others see summaries."
    )
    source = models.CharField(
        max_length=8,
        choices=MembershipSource.choices,
        default=MembershipSource.LOCAL,
        help_text="sso: the role follows the identity provider's groups at each login (docs/operations.md).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team__name", "user__username"]
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="membership_unique_team_user")]

    def __str__(self) -> str:
        return f"{self.user} — {self.team} ({self.role})"


class SsoIdentity(models.Model):
    """The link between a portal user and an OpenID Connect subject (issuer + `sub`).

    Logins are matched on this pair, never on a username or an email the provider sends,
    so a renamed IdP account keeps its portal user and nobody takes over a local account.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identities"
    )
    issuer = models.CharField(max_length=500)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="sso_identity_unique_subject"),
            models.UniqueConstraint(fields=["issuer", "user"], name="sso_identity_one_per_user_and_issuer"),
        ]

    def __str__(self) -> str:
        return f"{self.user} = {self.subject} @ {self.issuer}"


class ChangeRecord(models.Model):
    """One row per write, recorded in the same transaction as the write (who, when, what)."""

    class Action(models.TextChoices):
        CREATE = "create", "Created"
        UPDATE = "update", "Updated"
        DELETE = "delete", "Deleted"
        IMPORT = "import", "Imported"
        ACTION = "action", "Action"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="changes")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=200, blank=True, help_text="Who, when no user did it (a task).")
    action = models.CharField(max_length=16, choices=Action.choices)
    event_type = models.CharField(
        max_length=40,
        choices=ChangeEventType.choices,
        help_text="What happened (the action follows from it).",
    )
    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=300)
    summary = models.CharField(max_length=500, blank=True)
    changes = models.JSONField(default=dict, blank=True, help_text="{field: [old, new]}")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["team", "-created_at"], name="change_team_recent"),
            models.Index(fields=["team", "event_type", "-created_at"], name="change_team_event"),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.object_type} {self.object_repr}"

    @property
    def who(self) -> str:
        return self.actor.get_username() if self.actor else (self.actor_label or "system")


class Invitation(models.Model):
    """A single-use, expiring invitation to join a team, sent to an email address.

    The link carries a random token; only its SHA-256 is stored. The invitation is bound to its
    email: only an account with that email (or one created from the link, which gets it) accepts.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=TeamRole.choices)
    is_auditor = models.BooleanField(default=False)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["team", "accepted_at", "revoked_at"], name="invitation_team_open")]

    def __str__(self) -> str:
        return f"invitation of {self.email} to {self.team} ({self.role})"

    def is_open(self, now) -> bool:
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > now


class Notification(models.Model):
    """One person's in-app notice (the inbox), written beside the email of the same event."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="notifications")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=40)
    text = models.CharField(max_length=500)
    url = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "team", "read_at"], name="notification_unread")]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.text[:60]}"
