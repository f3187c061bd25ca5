"""Forms for the policy UI. They only parse input: the services validate the model and write it."""

from __future__ import annotations

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import URLValidator

from governance.choices import AccessClass, RuleKind, ServerCategory
from governance.models import (
    AgentRole,
    Environment,
    GlobalRateLimit,
    McpServer,
    ServerBinding,
    ServerRateLimit,
    TriggerSettings,
)


class LinesField(forms.CharField):
    """A list of strings edited one per line in a textarea (blank lines are ignored)."""

    widget = forms.Textarea(attrs={"rows": 3})

    def __init__(self, *, item_validators=(), **kwargs):
        kwargs.setdefault("required", False)
        self.item_validators = list(item_validators)
        super().__init__(strip=False, **kwargs)

    def prepare_value(self, value):
        if isinstance(value, (list, tuple)):
            return "\n".join(str(v) for v in value)
        return value

    def to_python(self, value) -> list[str]:
        if isinstance(value, (list, tuple)):
            return [str(v).strip() for v in value if str(v).strip()]
        return [line.strip() for line in (value or "").splitlines() if line.strip()]

    def validate(self, value) -> None:
        if self.required and not value:
            raise ValidationError(self.error_messages["required"], code="required")

    def run_validators(self, value) -> None:
        errors = []
        for item in value:
            for validator in self.item_validators:
                try:
                    validator(item)
                except ValidationError as exc:
                    errors.append(ValidationError(f"{item}: {' '.join(exc.messages)}"))
        if errors:
            raise ValidationError(errors)

    def has_changed(self, initial, data) -> bool:
        return self.to_python(initial) != self.to_python(data)


class ParseOnlyModelForm(forms.ModelForm):
    """A ModelForm used for its fields only.

    ModelForm would copy the data onto the instance and validate it; here the service does
    both, so the instance (passed for initial values) stays untouched and the service can
    diff old against new for the change history.
    """

    def _post_clean(self) -> None:
        pass


def apply_service_errors(form: forms.BaseForm, exc: ValidationError) -> None:
    """Show a service's ValidationError on the form: on its field if the form has it, else on top."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc.messages)
        return
    for field, errors in exc.message_dict.items():
        if field in form.fields and field != NON_FIELD_ERRORS:
            form.add_error(field, errors)
        else:
            label = "" if field == NON_FIELD_ERRORS else f"{field.replace('_', ' ').capitalize()}: "
            form.add_error(None, [f"{label}{message}" for message in errors])


class ServerForm(ParseOnlyModelForm):
    args = LinesField(label="Arguments", help_text="stdio: one argument per line.")
    adr_links = LinesField(
        label="ADR links",
        help_text="One link per line.",
        item_validators=[URLValidator(schemes=["http", "https"])],
    )

    class Meta:
        model = McpServer
        fields = McpServer.FIELDS
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "known_risks": forms.Textarea(attrs={"rows": 3}),
            "past_incidents": forms.Textarea(attrs={"rows": 3}),
        }


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


class PolicyImportForm(forms.Form):
    """A policy in the seed's YAML shape, uploaded as a file or pasted."""

    file = forms.FileField(required=False, label="YAML file")
    text = forms.CharField(
        required=False,
        strip=False,
        label="or paste the YAML",
        widget=forms.Textarea(attrs={"rows": 16, "spellcheck": "false", "class": "code"}),
    )

    MAX_BYTES = 1024 * 1024

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("file")
        if upload is not None:
            if upload.size > self.MAX_BYTES:
                raise ValidationError("The file is larger than 1 MB.")
            try:
                cleaned["text"] = upload.read().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValidationError("The file is not UTF-8 text.") from exc
        if not (cleaned.get("text") or "").strip():
            raise ValidationError("Upload a YAML file or paste the policy.")
        return cleaned
