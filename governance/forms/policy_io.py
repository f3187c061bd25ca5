"""Importing a policy in the seed's YAML shape."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError


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
