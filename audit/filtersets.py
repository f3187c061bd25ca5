"""The audit API's list filters: the session list (same rules as the sessions page) and an events page."""

from __future__ import annotations

from datetime import date

import django_filters
from django.core.validators import MaxValueValidator

from audit import selectors
from audit.choices import CallStatus, SessionState, Trigger
from portal.filtersets import IntegerFilter, team_filter


def _day(help_text: str) -> django_filters.DateFilter:
    message = "use YYYY-MM-DD."
    return django_filters.DateFilter(
        input_formats=["%Y-%m-%d"],
        error_messages={"invalid": message},
        validators=[MaxValueValidator(date(9998, 12, 31), message=message)],  # (+1 day must exist)
        help_text=help_text,
    )


class SessionFilterSet(django_filters.FilterSet):
    """Validates and documents the filters; `selectors.sessions_for_review` applies them (one rule)."""

    team = team_filter()
    role = django_filters.CharFilter()
    environment = django_filters.CharFilter(help_text="Environment name.")
    server = django_filters.CharFilter(help_text="Sessions that called this server (slug).")
    status = django_filters.ChoiceFilter(choices=CallStatus.choices)
    state = django_filters.ChoiceFilter(choices=SessionState.choices)
    trigger = django_filters.ChoiceFilter(choices=Trigger.choices)
    acknowledged = django_filters.ChoiceFilter(choices=[("yes", "yes"), ("no", "no")])
    date_from = _day("YYYY-MM-DD, on started_at.")
    date_to = _day("YYYY-MM-DD, on started_at (inclusive).")

    def filter_queryset(self, queryset):
        filters = dict(self.form.cleaned_data)
        team = filters.pop("team", None)
        if team:
            queryset = queryset.filter(team__slug=team)
        return selectors.sessions_for_review(base=queryset, filters=filters)


class EventFilterSet(django_filters.FilterSet):
    after_seq = IntegerFilter(field_name="seq", lookup_expr="gt", help_text="Only events after this seq.")
