"""Forms of the reviewers' pages: session filters, acknowledgement, explanations, decisions, exports."""

from __future__ import annotations

from django import forms

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
