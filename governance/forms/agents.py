"""Registering and changing an agent: its roles, environments and OAuth client."""

from __future__ import annotations

from django import forms

from governance.models import AgentRole, Environment
from governance.services.agents import GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS
from portal.pages import LinesField

GRANT_CHOICES = [
    (GRANT_CLIENT_CREDENTIALS, "Headless (client credentials): a confidential client with a secret"),
    (GRANT_AUTHORIZATION_CODE, "Interactive (authorization code + PKCE): a person signs in and consents"),
]


class _Bindings(forms.Form):
    roles = forms.ModelMultipleChoiceField(
        queryset=AgentRole.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        help_text="The roles it may use. A gateway enforcing another role refuses its requests.",
    )
    environments = forms.ModelMultipleChoiceField(
        queryset=Environment.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Where it may work: only these environments' bundles list it.",
    )

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["roles"].queryset = AgentRole.objects.for_team(team).order_by("name")
        self.fields["environments"].queryset = Environment.objects.for_team(team)

    def clean(self):
        data = super().clean()
        # The services take lists (ModelMultipleChoiceField cleans to a queryset).
        for key in ("roles", "environments"):
            if key in data:
                data[key] = list(data[key])
        return data


class AgentForm(_Bindings):
    name = forms.CharField(max_length=200, help_text="Who this is, e.g. “CI bot” or “Claude Code (Ana)”.")
    slug = forms.SlugField(max_length=100, help_text="Its id in sessions and tokens, e.g. ci-bot.")
    grant = forms.ChoiceField(
        label="Kind", choices=GRANT_CHOICES, initial=GRANT_CLIENT_CREDENTIALS, widget=forms.RadioSelect
    )
    public = forms.BooleanField(
        label="Public client (no secret, e.g. a desktop app)",
        required=False,
        help_text="Interactive agents only. PKCE S256 is required either way.",
    )
    redirect_uris = LinesField(
        label="Redirect URIs",
        help_text="Interactive agents: one per line, e.g. http://127.0.0.1:33418/callback.",
    )

    field_order = ["name", "slug", "grant", "public", "redirect_uris", "roles", "environments"]

    def clean_redirect_uris(self) -> str:
        return "\n".join(self.cleaned_data["redirect_uris"])


class AgentEditForm(_Bindings):
    name = forms.CharField(max_length=200)
    redirect_uris = LinesField(label="Redirect URIs", help_text="One per line.")

    field_order = ["name", "redirect_uris", "roles", "environments"]

    def __init__(self, *args, agent, **kwargs):
        interactive = agent.is_interactive
        initial = {
            "name": agent.name,
            "roles": list(agent.roles.all()),
            "environments": list(agent.environments.all()),
            "redirect_uris": agent.application.redirect_uris.split() if interactive else [],
        }
        super().__init__(*args, initial=initial, team=agent.team, **kwargs)
        if not interactive:
            del self.fields["redirect_uris"]

    def clean_redirect_uris(self) -> str:
        return "\n".join(self.cleaned_data["redirect_uris"])
