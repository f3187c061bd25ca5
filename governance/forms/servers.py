"""The MCP server catalogue: a server, the list filter, a tool's override."""

from __future__ import annotations

from django import forms
from django.core.validators import URLValidator

from governance.choices import AccessClass, ServerCategory, UnknownToolPolicy
from governance.models import McpServer
from portal.pages import LinesField, ParseOnlyModelForm


class ServerForm(ParseOnlyModelForm):
    args = LinesField(label="Arguments", help_text="stdio: one argument per line.")
    adr_links = LinesField(
        label="ADR links",
        help_text="One link per line.",
        item_validators=[URLValidator(schemes=["http", "https"])],
    )
    allow_unknown_tools = forms.ChoiceField(
        label="Unknown tools",
        choices=UnknownToolPolicy.choices,
        required=False,
        help_text="Tools the upstream lists that the catalogue does not know (added at run time, never "
        "approved): hidden, refused and reported for review, or allowed and counted as writes.",
    )
    elicitation_url_domains = LinesField(
        label="URL elicitation domains",
        help_text="One domain per line (example.com also covers login.example.com); https only.",
    )

    class Meta:
        model = McpServer
        fields = McpServer.FIELDS
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "known_risks": forms.Textarea(attrs={"rows": 3}),
            "past_incidents": forms.Textarea(attrs={"rows": 3}),
        }

    def clean_allow_unknown_tools(self) -> str:
        # A post without the field (scripts, older pages) keeps the safe default: deny.
        return self.cleaned_data.get("allow_unknown_tools") or UnknownToolPolicy.DENY


class ServerFilterForm(forms.Form):
    category = forms.ChoiceField(choices=[("", "All categories"), *ServerCategory.choices], required=False)


class ToolForm(forms.Form):
    """The admin's override of a tool's class and whether each call needs approval."""

    access_class_override = forms.ChoiceField(
        label="Class",
        choices=[("", "derived"), *AccessClass.choices],
        required=False,
    )
    approval_required = forms.BooleanField(label="Approval required", required=False)
