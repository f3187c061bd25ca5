"""Forms for production-access tickets and the kill-switch panel.

They only parse input; the services in governance.services.{access,flags}
validate and write.
"""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.utils import timezone

from governance.choices import Capability, ConstraintOperator
from governance.models import AgentRole, Environment, FlagState, McpServer

DATETIME_INPUT = "%Y-%m-%dT%H:%M"


class UtcDateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, **kwargs):
        super().__init__(format=DATETIME_INPUT, **kwargs)


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
        queryset=McpServer.objects.none(), widget=forms.CheckboxSelectMultiple,
        help_text="Only servers on the role's allowlist can be granted.",
    )  # fmt: skip
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
        if not self.is_bound:
            now = timezone.now().replace(second=0, microsecond=0)
            self.initial.setdefault("starts_at", now)
            self.initial.setdefault("ends_at", now + timedelta(hours=min(team.max_access_window_hours, 2)))
        self.fields["ends_at"].help_text = f"At most {team.max_access_window_hours} hours after the start."


class DecisionForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)


class FlagForm(forms.Form):
    server = forms.ModelChoiceField(queryset=McpServer.objects.none())
    capability = forms.ChoiceField(choices=Capability.choices, initial=Capability.WRITE)
    name = forms.CharField(
        required=False,
        max_length=200,
        help_text="Leave empty for mcp.<server>.<capability>, e.g. mcp.filesystem.write.",
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["server"].queryset = McpServer.objects.for_team(team).order_by("slug")


class FlagDisableForm(forms.Form):
    reason = forms.CharField(
        max_length=500, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Every agent the flag stops sees this reason.",
    )  # fmt: skip


class FlagEnableForm(forms.Form):
    reason = forms.CharField(max_length=500, required=False)
    resume = forms.BooleanField(required=False, help_text="Also release the sessions this flag halted.")


class FlagConstraintsForm(forms.Form):
    """A flag's strategy in one environment: on/off and at most one role constraint."""

    enabled = forms.BooleanField(required=False, label="On")
    operator = forms.ChoiceField(
        choices=[("", "every role"), *ConstraintOperator.choices], required=False, label="Roles"
    )
    roles = forms.CharField(required=False, help_text="Role names, separated by commas.")
    reason = forms.CharField(max_length=500, required=False)

    def clean(self):
        data = super().clean()
        roles = [r.strip() for r in (data.get("roles") or "").split(",") if r.strip()]
        if data.get("operator") and not roles:
            self.add_error("roles", "Name at least one role.")
        data["constraints"] = (
            [{"context_name": "role", "operator": data["operator"], "values": roles}]
            if data.get("operator")
            else []
        )
        return data

    @classmethod
    def for_state(cls, state: FlagState | None, **kwargs):
        initial = {"enabled": True}
        if state is not None:
            initial = {"enabled": state.enabled, "reason": state.reason}
            if state.constraints:
                c = state.constraints[0]
                initial.update(operator=c["operator"], roles=", ".join(c["values"]))
        return cls(initial=initial, **kwargs)
