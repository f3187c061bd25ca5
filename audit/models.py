"""Audit models: agent sessions, events, acknowledgements, reviewers' decisions and sealed digests.

`AuditEvent` and `AuditDigest` are append-only: database triggers (migration 0002) refuse
UPDATE, DELETE and TRUNCATE on them, and every event is hash-chained to the previous one of
its session (see docs/audit.md).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from audit.choices import (
    GENESIS_HASH,
    CallStatus,
    DecisionKind,
    Phase,
    ReviewStatus,
    SessionState,
    SinkFormat,
    SinkKind,
    SuggestionKind,
    SuggestionStatus,
    Trigger,
)
from governance.choices import AgentAuth
from portal.permissions import team_scoped_manager


class AgentSession(models.Model):
    """One agent connection through a gateway. The id is chosen by the gateway (uuid4)."""

    id = models.UUIDField(primary_key=True)
    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="agent_sessions")
    environment = models.ForeignKey(
        "governance.Environment", on_delete=models.CASCADE, related_name="agent_sessions"
    )
    client = models.ForeignKey(
        "governance.EnforcementClient",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="agent_sessions",
    )
    role = models.CharField(max_length=100)
    read_only = models.BooleanField(default=True)
    declared_large_data = models.BooleanField(default=False)
    # Who: the label the gateway sent (agent slug, or the OS user for a local stdio gateway), the registered
    # agent when it authenticated one, and how; run_id: the run the session belongs to (docs/enforcer-api.md).
    agent = models.CharField(max_length=500, blank=True)
    registered_agent = models.ForeignKey(
        "governance.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions"
    )
    agent_auth = models.CharField(max_length=16, blank=True, choices=AgentAuth.choices)
    run_id = models.CharField(max_length=200, blank=True)
    # The environment gate's report of a session refused at start (state refused).
    gate_report = models.JSONField(null=True, blank=True)
    bundle_version = models.PositiveIntegerField(null=True, blank=True)
    state = models.CharField(max_length=8, choices=SessionState.choices, default=SessionState.ACTIVE)
    trigger = models.CharField(max_length=40, choices=Trigger.choices, null=True, blank=True)  # noqa: DJ001 - null on the wire and in the hash
    state_reason = models.TextField(blank=True)
    last_calls = models.JSONField(
        default=list, blank=True, help_text="The last three calls the gateway reported."
    )
    control_version = models.PositiveIntegerField(
        default=0, help_text="Increases with every person's decision the gateway must see."
    )
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Counters, kept by the ingestion service in the same transaction as the events.
    calls_total = models.PositiveIntegerField(
        default=0, help_text="RESULT events (completed or blocked calls)."
    )
    calls_blocked = models.PositiveIntegerField(default=0)
    calls_failed = models.PositiveIntegerField(default=0)
    event_count = models.PositiveIntegerField(default=0)
    last_event_at = models.DateTimeField(null=True, blank=True)
    # Chain head: seq and hash of the last stored event (0 and the genesis hash when none).
    last_seq = models.PositiveBigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default=GENESIS_HASH)
    sealed_seq = models.PositiveBigIntegerField(
        default=0, help_text="Head seq in the team's latest audit digest."
    )
    # Space-delimited tokens (" a b ") so list filters stay portable and need no join.
    servers_used = models.TextField(blank=True, default="")
    triggers_seen = models.TextField(blank=True, default="")
    pending_approvals = models.JSONField(
        default=list,
        blank=True,
        help_text="Calls waiting for a person's approval: [{call_id, server, tool, …}].",
    )
    last_seen_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The last time its gateway opened, reported, polled or shipped events for it (staleness).",
    )

    objects = team_scoped_manager("team")

    class Meta:
        ordering = ["-started_at", "id"]
        verbose_name = "agent session"
        indexes = [
            models.Index(fields=["team", "-started_at"], name="session_team_recent"),
            models.Index(fields=["team", "state"], name="session_team_state"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(calls_blocked__lte=models.F("calls_total"))
                & models.Q(calls_failed__lte=models.F("calls_total")),
                name="session_counters_consistent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role} session {str(self.id)[:8]}"

    @property
    def is_waiting(self) -> bool:
        return self.state in (SessionState.HALTED, SessionState.PAUSED)

    @property
    def halted_then_ended(self) -> bool:
        """Ended while halted or paused (needs `ended_from`, annotated by audit.selectors.with_end)."""
        return self.state == SessionState.ENDED and getattr(self, "ended_from", None) in (
            SessionState.HALTED,
            SessionState.PAUSED,
        )

    @property
    def short_id(self) -> str:
        return str(self.id)[:8]

    @property
    def server_list(self) -> list[str]:
        return self.servers_used.split()


# What a gateway sends of one event (docs/enforcer-api.md), in the record's order; the portal adds
# the session and the chain (`prev_hash`, `hash`).
EVENT_WIRE_FIELDS = (
    "seq",
    "call_id",
    "phase",
    "ts",
    "server",
    "tool",
    "arguments",
    "args_summary",
    "status",
    "result_summary",
    "bytes",
    "duration_ms",
    "trigger",
    "bundle_version",
    "result",
    "trace_id",
    "shadow",
)


class AuditEvent(models.Model):
    """One phase of one call. Append-only and hash-chained; never updated or deleted."""

    session = models.ForeignKey(AgentSession, on_delete=models.PROTECT, related_name="events", db_index=False)
    seq = models.PositiveBigIntegerField()
    call_id = models.CharField(max_length=64)
    phase = models.CharField(max_length=8, choices=Phase.choices)
    ts = models.DateTimeField()
    server = models.CharField(max_length=200)
    tool = models.CharField(max_length=200)
    arguments = models.JSONField(null=True, blank=True)
    args_summary = models.TextField(blank=True, default="")
    status = models.CharField(max_length=8, choices=CallStatus.choices, null=True, blank=True)  # noqa: DJ001 - null on the wire and in the hash
    result_summary = models.TextField(blank=True, default="")
    bytes = models.BigIntegerField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    trigger = models.CharField(max_length=40, choices=Trigger.choices, null=True, blank=True)  # noqa: DJ001 - null on the wire and in the hash
    bundle_version = models.PositiveIntegerField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    # the call's OpenTelemetry trace (32 hex digits), null when the gateway had none; hashed only when set.
    # Nullable without a default: adding it is a plain ADD COLUMN on both databases (no table rewrite,
    # and SQLite keeps the append-only triggers a table remake would drop).
    trace_id = models.CharField(max_length=32, null=True, blank=True)  # noqa: DJ001 - absent on the wire and in the hash
    # What a shadow bundle would have decided ({decision, trigger, bundle_version}); null: no shadow.
    shadow = models.JSONField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    received_at = models.DateTimeField(db_index=True)
    # The inserting transaction's id on PostgreSQL (column default pg_current_xact_id(), migration
    # 0005); 0 on SQLite and for events stored before it. (xact, id) is the order in which SIEM
    # sinks receive a team's events: see audit/services/streaming.py for why not the id alone.
    xact = models.BigIntegerField(db_default=0, editable=False)

    objects = team_scoped_manager("session__team")

    class Meta:
        ordering = ["session", "seq"]
        verbose_name = "audit event"
        indexes = [
            models.Index(fields=["xact", "id"], name="event_stream_order"),
            # the activity page's time ranges (audit/activity.py)
            models.Index(fields=["ts"], name="event_ts"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["session", "seq"], name="event_unique_session_seq"),
            models.CheckConstraint(condition=models.Q(seq__gte=1), name="event_seq_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.seq} {self.phase} {self.server}.{self.tool}"

    @property
    def is_failed(self) -> bool:
        return self.status == CallStatus.FAIL

    @property
    def is_blocked(self) -> bool:
        return self.status == CallStatus.BLOCKED


class Acknowledgement(models.Model):
    """A reviewer's sign-off on a session's log. One per session; afterwards the session is read-only."""

    session = models.OneToOneField(AgentSession, on_delete=models.CASCADE, related_name="acknowledgement")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    note = models.TextField(blank=True)
    at = models.DateTimeField()
    last_seq = models.PositiveBigIntegerField(default=0, help_text="The events it covers: 1..last_seq.")

    class Meta:
        verbose_name = "acknowledgement"

    def __str__(self) -> str:
        return f"Acknowledgement of {self.session}"


class FailedCallExplanation(models.Model):
    """What a failed call attempted and why it failed (needed before acknowledgement)."""

    session = models.ForeignKey(AgentSession, on_delete=models.CASCADE, related_name="explanations")
    call_id = models.CharField(max_length=64)
    explanation = models.TextField()
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = team_scoped_manager("session__team")

    class Meta:
        verbose_name = "failed-call explanation"
        constraints = [
            models.UniqueConstraint(fields=["session", "call_id"], name="explanation_once_per_call"),
        ]

    def __str__(self) -> str:
        return f"Explanation of {self.call_id}"


class SessionDecision(models.Model):
    """A person's decision the gateway picks up on the control channel.

    release / end apply to the session; approve / deny to one approval-required call (call_id).
    """

    session = models.ForeignKey(AgentSession, on_delete=models.CASCADE, related_name="decisions")
    kind = models.CharField(max_length=8, choices=DecisionKind.choices)
    call_id = models.CharField(max_length=64, blank=True)
    reason = models.TextField()
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decided_at = models.DateTimeField()
    control_version = models.PositiveIntegerField(
        help_text="The session's control_version this decision set."
    )
    from_state = models.CharField(max_length=8, choices=SessionState.choices)

    objects = team_scoped_manager("session__team")

    class Meta:
        ordering = ["session", "control_version"]
        verbose_name = "session decision"
        constraints = [
            models.UniqueConstraint(fields=["session", "control_version"], name="decision_unique_version"),
            models.CheckConstraint(
                condition=(models.Q(kind__in=["approve", "deny"]) & ~models.Q(call_id=""))
                | (models.Q(kind__in=["release", "end"]) & models.Q(call_id="")),
                name="decision_call_id_iff_call_decision",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.session})"


class SessionStateChange(models.Model):
    """One step of a session's state history (active → halted by X → released by Y → ended). Insert-only.

    Written in the same transaction as the state change itself (audit/services/sessions.py). A
    person's change links the SessionDecision that carries it; `open_calls` lists the INTENTs
    without a RESULT when the portal ended a stale session (their outcome is unknown).
    """

    class Source(models.TextChoices):
        GATEWAY = "gateway", "Gateway report"
        PERSON = "person", "Person"
        PORTAL = "portal", "Portal (stale session)"
        BACKFILL = "backfill", "Recorded from the session's state at migration"

    session = models.ForeignKey(AgentSession, on_delete=models.CASCADE, related_name="state_changes")
    from_state = models.CharField(max_length=8, choices=SessionState.choices, blank=True)
    to_state = models.CharField(max_length=8, choices=SessionState.choices)
    trigger = models.CharField(max_length=40, choices=Trigger.choices, blank=True)
    flag = models.CharField(max_length=200, blank=True, help_text="The kill-switch flag that halted it.")
    source = models.CharField(max_length=8, choices=Source.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decision = models.ForeignKey(
        SessionDecision, null=True, blank=True, on_delete=models.CASCADE, related_name="state_changes"
    )
    reason = models.TextField(blank=True)
    open_calls = models.JSONField(
        default=list, blank=True, help_text="[{call_id, seq, server, tool}] whose outcome is unknown."
    )
    at = models.DateTimeField()

    objects = team_scoped_manager("session__team")

    class Meta:
        ordering = ["session", "at", "pk"]
        verbose_name = "session state change"
        indexes = [models.Index(fields=["session", "at"], name="state_change_session_at")]

    def __str__(self) -> str:
        return f"{self.session_id}: {self.from_state or '∅'} → {self.to_state}"

    @property
    def by(self) -> str:
        """Who made the change, as the history shows it."""
        if self.actor_id:
            return self.actor.get_username()
        return self.get_source_display()


class ActivityHour(models.Model):
    """The activity page's hourly rollup of RESULT events (audit/services/rollup.py): one row per
    team, UTC hour, environment, role, server, tool, status and trigger. It holds exactly the events
    below the watermark (`ActivityRollupWatermark`); the pages add the events above it from the raw
    table, so the figures equal those counted from raw events at any moment."""

    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()
    environment = models.ForeignKey("governance.Environment", on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=100)
    server = models.CharField(max_length=200)
    tool = models.CharField(max_length=200)
    # "" for none (an event's null status or trigger): a unique key treats NULLs as distinct.
    status = models.CharField(max_length=8, blank=True)
    trigger = models.CharField(max_length=40, blank=True)
    calls = models.PositiveBigIntegerField(default=0)
    bytes = models.BigIntegerField(default=0)
    last_ts = models.DateTimeField()

    objects = team_scoped_manager("team")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["team", "hour", "environment", "role", "server", "tool", "status", "trigger"],
                name="activity_hour_unique_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h {self.server}.{self.tool} {self.status}: {self.calls}"


class ActivityRollupWatermark(models.Model):
    """Which of a team's events `ActivityHour` holds. PostgreSQL: those with `xact` below `xact`
    (the team's stream horizon when the rollup read them); SQLite (writers serialised, xact 0):
    those with `id` up to `event_id`."""

    team = models.OneToOneField("portal.Team", on_delete=models.CASCADE, related_name="+")
    xact = models.BigIntegerField(default=0)
    event_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"team {self.team_id}: activity rollup below xact {self.xact} / id {self.event_id}"


class AuditDigest(models.Model):
    """A signed seal of a team's chain heads, chained to the team's previous digest. Append-only."""

    team = models.ForeignKey("portal.Team", on_delete=models.PROTECT, related_name="audit_digests")
    number = models.PositiveIntegerField(help_text="1, 2, 3… per team.")
    created_at = models.DateTimeField()
    heads = models.JSONField(help_text='[{"session": uuid, "seq": int, "hash": hex}] sorted by session.')
    prev_digest_hash = models.CharField(max_length=64)
    digest_hash = models.CharField(max_length=64, help_text="sha256 of the canonical digest payload.")
    kid = models.CharField(max_length=64)
    signature = models.TextField(help_text="Ed25519 signature of the canonical payload, base64url.")

    objects = team_scoped_manager("team")

    class Meta:
        ordering = ["team", "number"]
        verbose_name = "audit digest"
        constraints = [models.UniqueConstraint(fields=["team", "number"], name="digest_unique_team_number")]

    def __str__(self) -> str:
        return f"{self.team_id} digest #{self.number}"


class AuditDigestCopy(models.Model):
    """A digest's write-once copy reached one external sink (MCPGOV_DIGEST_SINKS). Insert-only.

    Missing rows are the retry queue: every sealing run writes the digests a sink lacks.
    """

    digest = models.ForeignKey(AuditDigest, on_delete=models.PROTECT, related_name="copies")
    sink = models.CharField(max_length=300, help_text="The sink as configured, e.g. dir:/var/lib/…")
    written_at = models.DateTimeField()

    class Meta:
        verbose_name = "audit digest copy"
        constraints = [models.UniqueConstraint(fields=["digest", "sink"], name="digest_copy_once_per_sink")]

    def __str__(self) -> str:
        return f"{self.digest} → {self.sink}"


class AuditSink(models.Model):
    """One stream of a team's audit events to a SIEM (syslog or webhook), with its durable cursor.

    Events go out in (xact, id) order, at least once: the cursor (cursor_xact, cursor_id) is the
    last event the receiver accepted, advanced only after it did. Secrets are Fernet tokens.
    """

    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="audit_sinks")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=SinkKind.choices)
    format = models.CharField(max_length=8, choices=SinkFormat.choices, default=SinkFormat.JSON)
    enabled = models.BooleanField(default=True)
    # syslog
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    tls = models.BooleanField(default=False)
    ca_file = models.CharField(max_length=500, blank=True, help_text="CA bundle (PEM) on the portal host.")
    # webhook
    url = models.URLField(max_length=1000, blank=True)
    hec = models.BooleanField(default=False, help_text="Splunk HTTP Event Collector mode.")
    secret_header = models.CharField(max_length=100, blank=True, default="X-Mcpgov-Token")
    secret_encrypted = models.TextField(blank=True, help_text="Fernet token of the secret; never shown.")
    # delivery state
    cursor_xact = models.BigIntegerField(default=-1)
    cursor_id = models.BigIntegerField(default=0)
    delivered_count = models.PositiveBigIntegerField(default=0)
    last_delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveIntegerField(default=0, help_text="Consecutive failed attempts.")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = team_scoped_manager("team")

    class Meta:
        ordering = ["team", "name"]
        verbose_name = "audit sink"
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="sink_unique_team_name"),
            models.CheckConstraint(
                condition=(models.Q(kind="webhook") & ~models.Q(url=""))
                | (models.Q(kind="syslog", port__isnull=False) & ~models.Q(host="")),
                name="sink_target_matches_kind",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def has_secret(self) -> bool:
        return bool(self.secret_encrypted)

    @property
    def target(self) -> str:
        if self.kind == SinkKind.SYSLOG:
            return f"{'syslog+tls' if self.tls else 'syslog+tcp'}://{self.host}:{self.port}"
        return f"{self.url}{' (HEC)' if self.hec else ''}"


class PolicyReview(models.Model):
    """The quarterly allowlist review (the seed's Layer 7): suggestions built from the period's audit data,
    each accepted into the policy draft or dismissed with a reason, then signed off and kept.

    `quarter` ("2026-Q3") is set on the scheduled reviews, one per team and quarter; on-demand reviews
    leave it blank."""

    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="policy_reviews")
    quarter = models.CharField(max_length=7, blank=True)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    status = models.CharField(max_length=10, choices=ReviewStatus.choices, default=ReviewStatus.OPEN)
    opened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    opened_at = models.DateTimeField(auto_now_add=True)
    calls = models.PositiveBigIntegerField(default=0, help_text="Calls recorded in the period.")
    signed_off_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    signed_off_at = models.DateTimeField(null=True, blank=True)
    sign_off_note = models.TextField(blank=True)

    objects = team_scoped_manager("team")

    class Meta:
        ordering = ["-period_end", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "quarter"],
                condition=~models.Q(quarter=""),
                name="one_review_per_team_quarter",
            ),
            models.CheckConstraint(
                condition=models.Q(period_start__lt=models.F("period_end")), name="review_period"
            ),
        ]

    def __str__(self) -> str:
        return f"Review {self.quarter or self.pk} of {self.team_id}"


class ReviewSuggestion(models.Model):
    """One suggestion of a review; objects named as the policy names them (role, server slug, tool, environment)."""

    review = models.ForeignKey(PolicyReview, on_delete=models.CASCADE, related_name="suggestions")
    kind = models.CharField(max_length=24, choices=SuggestionKind.choices)
    role = models.CharField(max_length=100, blank=True)
    server = models.CharField(max_length=200, blank=True)
    tool = models.CharField(max_length=200, blank=True)
    environment = models.CharField(max_length=100, blank=True)
    detail = models.CharField(max_length=500)
    status = models.CharField(max_length=10, choices=SuggestionStatus.choices, default=SuggestionStatus.OPEN)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    draft = models.ForeignKey(
        "governance.PolicyDraft", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    draft_positions = models.JSONField(default=list, blank=True, help_text="The draft changes it made.")

    class Meta:
        ordering = ["review", "pk"]

    def __str__(self) -> str:
        return self.detail
