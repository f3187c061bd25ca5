"""Kill-switch flags and their per-environment strategies over the REST API (the same services as the
kill-switch panel). Creating and deleting a flag needs change_policy; switching one needs toggle_flags."""

from __future__ import annotations

import django_filters
from django.db.models import Prefetch
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from governance.api.serializers import TeamScopedSerializer
from governance.choices import Capability
from governance.models import Environment, Flag, FlagState, McpServer
from governance.services import flags as flag_services
from portal.api import TeamPermission
from portal.permissions import TOGGLE_FLAGS


class FlagStateSerializer(serializers.ModelSerializer):
    environment = serializers.CharField(source="environment.name", read_only=True)

    class Meta:
        model = FlagState
        fields = ["environment", "enabled", "constraints", "reason", "changed_at"]
        read_only_fields = fields


class FlagSerializer(TeamScopedSerializer):
    server = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=McpServer.objects.none(),
        help_text="The server's slug (of the same team).",
    )
    name = serializers.CharField(
        required=False, allow_blank=True, max_length=200, help_text="Default: mcp.<server>.<capability>."
    )
    states = FlagStateSerializer(many=True, read_only=True)

    class Meta:
        model = Flag
        fields = ["id", "team", "name", "server", "capability", "description", "states", "created_at"]
        read_only_fields = ["id", "states", "created_at"]
        validators = []  # uniqueness is the service's check (with a message naming the flag)

    def get_fields(self):
        fields = super().get_fields()
        request = self.context.get("request")
        if request is not None:
            fields["server"].queryset = McpServer.objects.restrict(request.user)
        return fields

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["server"] = instance.server.slug
        return data


class FlagStateInputSerializer(serializers.Serializer):
    environment = serializers.CharField(help_text="The environment's name.")
    enabled = serializers.BooleanField()
    constraints = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        allow_null=True,
        help_text='[{"context_name": "role", "operator": "IN", "values": ["database_agent"]}]; omitted: kept.',
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500)


class FlagFilter(django_filters.FilterSet):
    team = django_filters.CharFilter(field_name="team__slug", help_text="Only flags of this team (slug).")
    server = django_filters.CharFilter(
        field_name="server__slug", help_text="Only flags of this server (slug)."
    )
    capability = django_filters.ChoiceFilter(choices=Capability.choices)

    class Meta:
        model = Flag
        fields = ["team", "server", "capability"]


class FlagViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Flags (`mcp.<server>.<capability>`) with their strategy in each environment.

    A toggle publishes the affected bundles at once (flags are emergency controls and bypass drafts)."""

    permission_classes = [IsAuthenticated, TeamPermission]
    serializer_class = FlagSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = FlagFilter

    @property
    def team_perm_write(self) -> str:
        return TOGGLE_FLAGS if self.action == "set_state" else "change_policy"

    def get_queryset(self):
        states = FlagState.objects.select_related("environment").order_by(
            "environment__order", "environment__pk"
        )
        return (
            Flag.objects.restrict(self.request.user)
            .select_related("team", "server")
            .prefetch_related(Prefetch("states", queryset=states))
            .order_by("team__slug", "name")
        )

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        serializer.instance = flag_services.flag_create(actor=self.request.user, **data)

    def perform_destroy(self, instance):
        flag_services.flag_delete(flag=instance, actor=self.request.user)

    @extend_schema(request=FlagStateInputSerializer, responses=FlagSerializer)
    @action(detail=True, methods=["post"], url_path="state")
    def set_state(self, request, pk=None):
        """Switch the flag on or off in one environment (a reason is required to switch it off),
        optionally with role constraints. Needs toggle_flags."""
        flag = self.get_object()
        data = FlagStateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        name = data.validated_data["environment"]
        environment = Environment.objects.filter(team_id=flag.team_id, name=name).first()
        if environment is None:
            raise serializers.ValidationError({"environment": f"No environment {name!r} in this team."})
        flag_services.flag_set_state(
            flag=flag,
            environment=environment,
            enabled=data.validated_data["enabled"],
            constraints=data.validated_data.get("constraints"),
            reason=data.validated_data.get("reason", ""),
            actor=request.user,
        )
        return Response(self.get_serializer(self.get_queryset().get(pk=flag.pk)).data)
