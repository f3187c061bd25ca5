"""Forms of the reviewers' pages: session filters, acknowledgement, explanations, decisions, exports."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from django import forms

from audit.activity import time_range
from audit.choices import CALL_DECISIONS, CallStatus, SessionState, Trigger
from audit.models import AgentSession

_BLANK = [("", "Any")]


class SessionFilterForm(forms.Form):
    role = forms.ChoiceField(required=False)
    environment = forms.ChoiceField(required=False)
    server = forms.ChoiceField(required=False)
    status = forms.ChoiceField(
        required=False,
        label="Calls",
        choices=[
            *_BLANK,
            (CallStatus.FAIL, "with failed calls"),
            (CallStatus.BLOCKED, "with blocked calls"),
            (CallStatus.SUCCESS, "all successful"),
        ],
    )
    state = forms.ChoiceField(required=False, choices=_BLANK + list(SessionState.choices))
    trigger = forms.ChoiceField(required=False, choices=_BLANK + list(Trigger.choices))
    acknowledged = forms.ChoiceField(
        required=False, choices=[*_BLANK, ("no", "Not yet"), ("yes", "Acknowledged")]
    )
    date_from = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, team=None, **kwargs):
        super().__init__(*args, **kwargs)
        sessions = AgentSession.objects.for_team(team)
        roles = sorted(set(sessions.values_list("role", flat=True)))
        self.fields["role"].choices = _BLANK + [(r, r) for r in roles]
        envs = (
            list(team.environments.order_by("order", "name").values_list("name", flat=True)) if team else []
        )
        self.fields["environment"].choices = _BLANK + [(e, e) for e in envs]
        servers = sorted(
            {
                s
                for tokens in sessions.values_list("servers_used", flat=True).distinct()
                for s in tokens.split()
            }
        )
        self.fields["server"].choices = _BLANK + [(s, s) for s in servers]

    def filters(self) -> dict:
        return {k: v for k, v in self.cleaned_data.items() if v not in (None, "")} if self.is_valid() else {}


class AcknowledgeForm(forms.Form):
    note = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Note",
        help_text="What you checked; kept with the acknowledgement.",
    )


class ExplanationForm(forms.Form):
    call_id = forms.CharField(widget=forms.HiddenInput, max_length=64)
    explanation = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Explanation",
        help_text="What the call attempted and why it failed.",
    )


class DecisionForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), label="Reason")
    # Releasing a session whose kill-switch flag is still off needs this (audit.services.session_release).
    confirm_flag_off = forms.BooleanField(required=False)


class ApprovalForm(forms.Form):
    call_id = forms.CharField(widget=forms.HiddenInput, max_length=64)
    decision = forms.ChoiceField(choices=[(k.value, k.label) for k in CALL_DECISIONS])
    reason = forms.CharField(label="Reason")


ACTIVITY_RANGES = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
ACTIVITY_MAX_DAYS = 366


class ActivityForm(forms.Form):
    """The activity page's time-range picker and the dimension its charts split by."""

    range = forms.ChoiceField(
        required=False,
        initial="7d",
        choices=[
            ("24h", "Last 24 hours"),
            ("7d", "Last 7 days"),
            ("30d", "Last 30 days"),
            ("90d", "Last 90 days"),
            ("custom", "From - to (dates, UTC)"),
        ],
    )
    start = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))
    by = forms.ChoiceField(
        required=False,
        initial="environment",
        label="Split by",
        choices=[
            ("environment", "Environment"),
            ("server", "Server"),
            ("role", "Role"),
            ("trigger", "Trigger"),
        ],
    )

    def clean(self):
        data = super().clean()
        data["range"] = data.get("range") or "7d"
        data["by"] = data.get("by") or "environment"
        if data["range"] == "custom":
            start, end = data.get("start"), data.get("end")
            if not start or not end:
                raise forms.ValidationError("A custom range needs both dates.")
            if end < start:
                raise forms.ValidationError("The range ends before it starts.")
            if (end - start).days + 1 > ACTIVITY_MAX_DAYS:
                raise forms.ValidationError(f"A range spans at most {ACTIVITY_MAX_DAYS} days.")
        return data

    def time_range(self, now: datetime):
        """The selected TimeRange (the default one when the form is not valid)."""
        data = self.cleaned_data if self.is_bound and self.is_valid() else {"range": "7d"}
        if data["range"] == "custom":
            start = datetime.combine(data["start"], time.min, tzinfo=UTC)
            end = datetime.combine(data["end"], time.min, tzinfo=UTC) + timedelta(days=1)
            return time_range(start=start, end=end)
        return time_range(start=now - ACTIVITY_RANGES[data["range"]], end=now)

    def split_by(self) -> str:
        return self.cleaned_data["by"] if self.is_bound and self.is_valid() else "environment"
