"""The change history page's filter: which kinds of change to show."""

from __future__ import annotations

from django import forms

from portal.choices import ChangeEventType


class ChangeHistoryFilterForm(forms.Form):
    event_type = forms.MultipleChoiceField(
        choices=ChangeEventType.choices,
        required=False,
        label="What happened",
        widget=forms.SelectMultiple(attrs={"size": 6}),
    )
