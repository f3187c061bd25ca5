"""Registering an enforcement client (a gateway)."""

from __future__ import annotations

from django import forms

from governance.models import AgentRole, Environment


class ClientForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="Which gateway this is, e.g. ci-runner-eu-1.")
    environment = forms.ModelChoiceField(
        queryset=Environment.objects.none(), help_text="The token reaches only this environment's bundle."
    )
    roles = forms.ModelMultipleChoiceField(
        queryset=AgentRole.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        help_text="The roles its gateways may enforce: the portal refuses a session with any other role.",
    )
    expires_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=3650,
        label="Expires after (days)",
        help_text="Leave empty for a token that does not expire.",
    )

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["environment"].queryset = Environment.objects.for_team(team)
        self.fields["roles"].queryset = AgentRole.objects.for_team(team).order_by("name")
