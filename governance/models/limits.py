"""Rate limits (global and per server) and kill-switch trigger settings, per team."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from governance.choices import (
    DEFAULT_CASCADE_WRITE_THRESHOLD,
    DEFAULT_LARGE_DATA_BYTES,
    DEFAULT_PRODUCTION_URL_WORDS,
)
from portal.permissions import team_scoped_manager


def _limit(help_text: str) -> models.PositiveIntegerField:
    return models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text=help_text
    )


class GlobalRateLimit(models.Model):
    """The seed's `rate_limits.global` block. Empty fields mean "no limit"."""

    team = models.OneToOneField("portal.Team", on_delete=models.CASCADE, related_name="global_rate_limit")
    max_calls_per_session = _limit("Hard stop for all calls in one session.")
    max_calls_per_minute = _limit("Hard stop for calls in any 60-second window.")
    pause_at_percent = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Pause with a summary once this share of a session limit is used.",
    )

    objects = team_scoped_manager("team")

    class Meta:
        verbose_name = "global rate limit"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(pause_at_percent__isnull=True)
                | models.Q(pause_at_percent__gte=1, pause_at_percent__lte=100),
                name="global_limit_pause_percent_range",
            ),
        ]

    def __str__(self) -> str:
        return f"Global limits of {self.team}"


class ServerRateLimit(models.Model):
    """The seed's `rate_limits.per_server.<server>` block."""

    FIELDS = (
        "max_calls_per_session",
        "max_calls_per_minute",
        "max_read_calls_per_session",
        "max_write_calls_per_session",
        "max_rows_returned",
        "max_execution_time_seconds",
        "max_response_bytes",
    )

    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="server_rate_limits")
    server = models.ForeignKey("governance.McpServer", on_delete=models.CASCADE, related_name="rate_limits")
    max_calls_per_session = _limit("Calls to this server in one session.")
    max_calls_per_minute = _limit("Calls to this server in any 60-second window.")
    max_read_calls_per_session = _limit("Read-class calls in one session.")
    max_write_calls_per_session = _limit("Write-class calls in one session.")
    max_rows_returned = _limit("Rows a single result may return.")
    max_execution_time_seconds = _limit("A call running longer is cancelled.")
    max_response_bytes = _limit("A larger result is withheld.")

    objects = team_scoped_manager("team")

    class Meta:
        ordering = ["server__slug"]
        verbose_name = "server rate limit"
        constraints = [
            models.UniqueConstraint(fields=["team", "server"], name="server_limit_once_per_server")
        ]

    def __str__(self) -> str:
        return f"Limits of {self.server.slug}"

    def clean(self) -> None:
        if self.server_id and self.team_id and self.server.team_id != self.team_id:
            raise ValidationError({"server": "The server belongs to another team."})
        if all(getattr(self, f) is None for f in self.FIELDS):
            raise ValidationError("Set at least one limit.")


class TriggerSettings(models.Model):
    """Kill-switch trigger thresholds (the seed's six triggers; the others need no setting)."""

    team = models.OneToOneField("portal.Team", on_delete=models.CASCADE, related_name="trigger_settings")
    cascade_write_threshold = models.PositiveSmallIntegerField(
        default=DEFAULT_CASCADE_WRITE_THRESHOLD,
        validators=[MinValueValidator(2), MaxValueValidator(100)],
        help_text="Consecutive writes across different resources that halt the session.",
    )
    large_data_bytes = models.PositiveIntegerField(
        default=DEFAULT_LARGE_DATA_BYTES,
        validators=[MinValueValidator(1)],
        help_text="A result larger than this, not declared in the session scope, is withheld.",
    )
    production_url_words = models.JSONField(
        default=list, blank=True, help_text="Words in a server URL that mean production."
    )

    objects = team_scoped_manager("team")

    class Meta:
        verbose_name = "trigger settings"
        verbose_name_plural = "trigger settings"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(cascade_write_threshold__gte=2), name="cascade_threshold_min_2"
            ),
        ]

    def __str__(self) -> str:
        return f"Trigger settings of {self.team}"

    def save(self, *args, **kwargs):
        if not self.production_url_words and self._state.adding:
            self.production_url_words = list(DEFAULT_PRODUCTION_URL_WORDS)
        super().save(*args, **kwargs)

    def clean(self) -> None:
        words = self.production_url_words
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise ValidationError({"production_url_words": "A list of non-empty words."})
