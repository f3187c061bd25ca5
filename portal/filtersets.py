"""What every app's API list filters share (django-filter; drf-spectacular documents them).

A filter value the field cannot take is a 400 naming the parameter, never ignored."""

from __future__ import annotations

import django_filters
from django import forms
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema_field

MAX_ID = 2**63 - 1  # a bigint primary key: larger ids are refused, not sent to the database


@extend_schema_field({"type": "integer", "minimum": 0, "maximum": MAX_ID})
class IntegerFilter(django_filters.NumberFilter):
    """A whole number from 0 to a bigint's largest, e.g. an object id (`?server=3`) or `?after_seq=`."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


def team_filter(field_name: str = "team__slug") -> django_filters.CharFilter:
    return django_filters.CharFilter(field_name=field_name, help_text="Only objects of this team (slug).")


class TeamFilterSet(django_filters.FilterSet):
    """`?team=<slug>` on a team-owned model (an unknown slug lists nothing)."""

    team = team_filter()


class ListFilters:
    """For an APIView whose GET is a list (a GenericAPIView filters by itself): `filterset_class`
    filters `self.filtered(queryset)`, and drf-spectacular documents its parameters on the GET."""

    filter_backends = [DjangoFilterBackend]
    filterset_class: type[django_filters.FilterSet]

    def filtered(self, queryset):
        for backend in self.filter_backends:
            queryset = backend().filter_queryset(self.request, queryset, self)
        return queryset
