"""Environments and their server bindings."""

from __future__ import annotations

from django import forms

from governance.models import Environment, McpServer, ServerBinding
from portal.pages import LinesField, ParseOnlyModelForm


class EnvironmentForm(ParseOnlyModelForm):
    forbidden_patterns = LinesField(help_text="One glob per line, such as *prod*.")

    class Meta:
        model = Environment
        fields = [
            "name",
            "description",
            "is_production",
            "requires_authorization",
            "forbidden_patterns",
            "note",
            "order",
        ]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "note": forms.Textarea(attrs={"rows": 2}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.is_production:
            # Production always requires authorization: shown ticked and locked, never taken from the request.
            field = self.fields["requires_authorization"]
            field.disabled = True
            field.initial = True
            field.help_text = (
                "🔒 Always on for production: access needs a person's explicit, time-bounded authorization."
            )
            self.fields["is_production"].disabled = True


class BindingForm(ParseOnlyModelForm):
    """A server binding in an environment; `server` is only asked for when adding one."""

    server = forms.ModelChoiceField(queryset=McpServer.objects.none(), empty_label="Choose a server…")

    class Meta:
        model = ServerBinding
        fields = ["server", "target_kind", "target", "permission"]
        widgets = {"target": forms.TextInput(attrs={"placeholder": "/srv/repo or postgresql://host/db"})}

    def __init__(self, *args, servers=None, **kwargs):
        super().__init__(*args, **kwargs)
        if servers is None:
            del self.fields["server"]
        else:
            self.fields["server"].queryset = servers
