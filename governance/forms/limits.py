"""Rate limits (global and per server) and the kill-switch trigger settings."""

from __future__ import annotations

from django import forms

from governance.models import GlobalRateLimit, McpServer, ServerRateLimit, TriggerSettings
from portal.pages import LinesField, ParseOnlyModelForm


class GlobalLimitsForm(ParseOnlyModelForm):
    class Meta:
        model = GlobalRateLimit
        fields = ["max_calls_per_session", "max_calls_per_minute", "pause_at_percent"]


class ServerLimitsForm(ParseOnlyModelForm):
    server = forms.ModelChoiceField(queryset=McpServer.objects.none(), empty_label="Choose a server…")

    class Meta:
        model = ServerRateLimit
        fields = ["server", *ServerRateLimit.FIELDS]

    def __init__(self, *args, servers=None, **kwargs):
        super().__init__(*args, **kwargs)
        if servers is None:
            del self.fields["server"]
        else:
            self.fields["server"].queryset = servers


class TriggerSettingsForm(ParseOnlyModelForm):
    production_url_words = LinesField(
        label="Production URL words",
        help_text="One word per line; a server URL containing one means production.",
    )

    class Meta:
        model = TriggerSettings
        fields = ["cascade_write_threshold", "large_data_bytes", "production_url_words"]
