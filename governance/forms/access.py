"""Production-access tickets: filing one, and a reviewer's decision."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.utils import timezone

from governance.choices import RuleKind
from governance.models import AgentRole, Environment, McpServer
from portal.pages import DATETIME_INPUT, UtcDateTimeInput


def _team_choices(form: forms.Form, team) -> None:
    form.fields["servers"].queryset = McpServer.objects.for_team(team).order_by("slug")
    if "environment" in form.fields:
        form.fields["environment"].queryset = Environment.objects.for_team(team).filter(
            requires_authorization=True
        )
    if "role" in form.fields:
        form.fields["role"].queryset = AgentRole.objects.for_team(team).order_by("name")


class AccessRequestForm(forms.Form):
    environment = forms.ModelChoiceField(queryset=Environment.objects.none(), empty_label=None)
    role = forms.ModelChoiceField(
        queryset=AgentRole.objects.none(),
        label="Agent role",
        help_text="The role whose agents get the access.",
    )
    servers = forms.ModelMultipleChoiceField(
        queryset=McpServer.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        help_text="The servers on the chosen role's allowlist: only those can be granted.",
    )
    starts_at = forms.DateTimeField(
        label="Start (UTC)", widget=UtcDateTimeInput(), input_formats=[DATETIME_INPUT]
    )
    ends_at = forms.DateTimeField(
        label="End (UTC)", widget=UtcDateTimeInput(), input_formats=[DATETIME_INPUT]
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What the agent will do in production and why it cannot wait (e.g. the incident ticket).",
    )

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        _team_choices(self, team)
        self._servers_of_chosen_role()
        if not self.is_bound:
            now = timezone.now().replace(second=0, microsecond=0)
            self.initial.setdefault("starts_at", now)
            self.initial.setdefault("ends_at", now + timedelta(hours=min(team.max_access_window_hours, 2)))
        self.fields["ends_at"].help_text = f"At most {team.max_access_window_hours} hours after the start."

    def _servers_of_chosen_role(self) -> None:
        """Only the chosen role's allowed servers are offered (and accepted); the role select
        reloads this field with htmx when it changes (`?role=` on the page without a script)."""
        roles = self.fields["role"].queryset
        chosen = self.data.get("role") if self.is_bound else self.initial.get("role")
        role = None
        if chosen not in (None, ""):
            try:
                role = roles.filter(pk=int(chosen)).first()
            except (TypeError, ValueError):
                role = None
        if role is None and not self.is_bound:
            role = roles.first()
            if role is not None:
                self.initial["role"] = role.pk
        servers = self.fields["servers"].queryset
        self.fields["servers"].queryset = (
            servers.filter(role_rules__role=role, role_rules__kind=RuleKind.ALLOWED)
            if role
            else servers.none()
        )
        self.fields["role"].widget.attrs.update(
            {
                "hx-get": "",
                "hx-trigger": "change",
                "hx-target": "#field-servers",
                "hx-select": "#field-servers",
                "hx-swap": "outerHTML",
            }
        )


class DecisionForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
