"""The kill-switch panel: a flag, turning it off and on, its strategy per environment."""

from __future__ import annotations

from django import forms

from governance.choices import Capability, ConstraintOperator
from governance.models import FlagState, McpServer


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
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Every agent the flag stops sees this reason.",
    )


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
