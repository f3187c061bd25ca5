"""Agent roles and their allowed and forbidden servers."""

from __future__ import annotations

from django import forms

from governance.choices import RuleKind
from governance.models import AgentRole, McpServer
from portal.pages import ParseOnlyModelForm


class RoleForm(ParseOnlyModelForm):
    class Meta:
        model = AgentRole
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}


class RoleServerForm(forms.Form):
    """Add one of the team's servers to a role's allowed or forbidden list."""

    server = forms.ModelChoiceField(queryset=McpServer.objects.none(), empty_label="Choose a server…")
    kind = forms.ChoiceField(choices=RuleKind.choices, widget=forms.HiddenInput)

    def __init__(self, *args, servers, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["server"].queryset = servers
