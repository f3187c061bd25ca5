"""The policy API's list filters (`?team=`, `?server=`, `?environment=`, `?status=`, `?mine=`)."""

from __future__ import annotations

import django_filters

from governance.choices import AccessRequestStatus
from portal.filtersets import IntegerFilter, TeamFilterSet, team_filter


class ToolFilterSet(django_filters.FilterSet):
    team = team_filter("server__team__slug")
    server = IntegerFilter(field_name="server_id", help_text="Only this server's tools (id).")


class BindingFilterSet(django_filters.FilterSet):
    team = team_filter("environment__team__slug")
    environment = IntegerFilter(
        field_name="environment_id", help_text="Only this environment's bindings (id)."
    )


MINE_YES = ("1", "true", "yes")


class AccessRequestFilterSet(TeamFilterSet):
    status = django_filters.ChoiceFilter(choices=AccessRequestStatus.choices)
    mine = django_filters.ChoiceFilter(
        choices=[(v, v) for v in (*MINE_YES, "0", "false", "no")],
        method="filter_mine",
        help_text="1, true or yes: only the requests you filed.",
    )

    def filter_mine(self, queryset, name, value):
        return queryset.filter(requester=self.request.user) if value in MINE_YES else queryset
