"""The change history API: `GET /api/v1/changes/`, the rows of the history page, filtered by event type."""

from __future__ import annotations

import django_filters
from rest_framework import mixins, serializers, viewsets

from governance import selectors
from portal.choices import ChangeEventType
from portal.filtersets import team_filter
from portal.models import ChangeRecord


class ChangeRecordSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    who = serializers.CharField(read_only=True, help_text="The user's name, else the task that wrote it.")

    class Meta:
        model = ChangeRecord
        fields = [
            "id",
            "team",
            "created_at",
            "who",
            "event_type",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "summary",
            "changes",
        ]
        read_only_fields = fields


class ChangeRecordFilterSet(django_filters.FilterSet):
    team = team_filter()
    event_type = django_filters.MultipleChoiceFilter(
        choices=ChangeEventType.choices,
        help_text="Only these kinds of change (repeat the parameter for more).",
    )


class ChangeRecordViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Every write to the policy and membership of the person's teams, newest first."""

    serializer_class = ChangeRecordSerializer
    filterset_class = ChangeRecordFilterSet

    def get_queryset(self):
        return selectors.changes_for_user(user=self.request.user)
