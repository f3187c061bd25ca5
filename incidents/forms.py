"""Forms for incidents. They only parse input; incidents.services validates and writes."""

from __future__ import annotations

from django import forms

from governance.models import FlagState, McpServer
from incidents.choices import Severity


class IncidentForm(forms.Form):
    title = forms.CharField(max_length=300)
    severity = forms.ChoiceField(choices=Severity.choices, initial=Severity.SEV2)
    servers = forms.ModelMultipleChoiceField(
        queryset=McpServer.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Affected servers",
        help_text="Containment disables every flag of these servers.",
    )
    description = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), label="What happened"
    )

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["servers"].queryset = McpServer.objects.for_team(team).order_by("slug")


class IncidentServersForm(forms.Form):
    servers = forms.ModelMultipleChoiceField(
        queryset=McpServer.objects.none(), widget=forms.CheckboxSelectMultiple
    )

    def __init__(self, *args, team, exclude=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["servers"].queryset = (
            McpServer.objects.for_team(team).exclude(pk__in=[s.pk for s in exclude]).order_by("slug")
        )


class SessionLinkForm(forms.Form):
    session_id = forms.CharField(
        max_length=64,
        label="Session id",
        help_text="Its id, or its first 8 characters as the session pages show them.",
    )
    note = forms.CharField(required=False, max_length=500)


class RootCauseForm(forms.Form):
    root_cause = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}))


class NoteForm(forms.Form):
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), label="Note")


class ResolveForm(forms.Form):
    reenable = forms.ModelMultipleChoiceField(
        queryset=FlagState.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Re-enable the flags containment disabled",
    )
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), label="Resolution note")
    resume_sessions = forms.BooleanField(
        required=False,
        initial=True,
        label="Let the sessions these flags halted continue",
        help_text='Each is released by you, with the reason "Flag … re-enabled".',
    )

    def __init__(self, *args, candidates, halted: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if halted:
            self.fields["resume_sessions"].label = f"Let the {halted} session(s) these flags halted continue"
        else:
            del self.fields["resume_sessions"]
        self.fields["reenable"].queryset = FlagState.objects.filter(
            pk__in=[s.pk for s in candidates]
        ).select_related("flag", "environment")
        self.fields["reenable"].label_from_instance = lambda s: f"{s.flag.name} in {s.environment.name}"
        if not self.is_bound:
            self.initial["reenable"] = [s.pk for s in candidates]
