"""SIEM sinks in the REST API (`/api/v1/audit-sinks/`): status and backlog for reviewers, CRUD and
test-send for admins (manage_clients). Secrets are write-only. Writes call audit/services/streaming.py."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from audit.models import AuditSink
from audit.services.streaming import sink_backlog, sink_create, sink_delete, sink_test_send, sink_update
from portal.api import TeamField, TeamPermission
from portal.filtersets import TeamFilterSet
from portal.permissions import ACKNOWLEDGE_SESSION, MANAGE_CLIENTS


class AuditSinkSerializer(serializers.ModelSerializer):
    team = TeamField(help_text="Team slug; fixed after create.")
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        help_text="Webhook secret or HEC token (never returned).",
    )
    clear_secret = serializers.BooleanField(write_only=True, required=False, default=False)
    from_start = serializers.BooleanField(
        write_only=True, required=False, default=False, help_text="On create: send the stored trail too."
    )
    has_secret = serializers.BooleanField(read_only=True)
    target = serializers.CharField(read_only=True)
    backlog_events = serializers.SerializerMethodField()
    backlog_oldest_age_seconds = serializers.SerializerMethodField()

    class Meta:
        model = AuditSink
        fields = [
            "id",
            "team",
            "name",
            "kind",
            "format",
            "enabled",
            "host",
            "port",
            "tls",
            "ca_file",
            "url",
            "hec",
            "secret_header",
            "secret",
            "clear_secret",
            "from_start",
            "has_secret",
            "target",
            "delivered_count",
            "last_delivered_at",
            "last_error",
            "last_error_at",
            "failures",
            "next_attempt_at",
            "backlog_events",
            "backlog_oldest_age_seconds",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "delivered_count",
            "last_delivered_at",
            "last_error",
            "last_error_at",
            "failures",
            "next_attempt_at",
            "created_at",
            "updated_at",
        ]

    def _backlog(self, sink):
        cache = self.context.setdefault("_backlogs", {})
        if sink.pk not in cache:
            cache[sink.pk] = sink_backlog(sink)
        return cache[sink.pk]

    def get_backlog_events(self, sink) -> int:
        return self._backlog(sink).events

    def get_backlog_oldest_age_seconds(self, sink) -> float:
        return round(self._backlog(sink).oldest_age_seconds, 3)


class AuditSinkViewSet(viewsets.ModelViewSet):
    """Per-team SIEM sinks with their delivery state and backlog (docs/operations.md)."""

    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAuthenticated, TeamPermission]
    serializer_class = AuditSinkSerializer
    team_perm_read = ACKNOWLEDGE_SESSION
    team_perm_write = MANAGE_CLIENTS

    filterset_class = TeamFilterSet

    def get_queryset(self):
        return AuditSink.objects.restrict(self.request.user, ACKNOWLEDGE_SESSION).select_related("team")

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        data.pop("clear_secret", None)
        serializer.instance = sink_create(team=data.pop("team"), actor=self.request.user, **data)

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        data.pop("team", None)
        data.pop("from_start", None)
        serializer.instance = sink_update(sink=serializer.instance, actor=self.request.user, **data)

    def perform_destroy(self, instance):
        sink_delete(sink=instance, actor=self.request.user)

    @extend_schema(
        request=None,
        responses=inline_serializer(
            "SinkTestResult", {"accepted": serializers.BooleanField(), "error": serializers.CharField()}
        ),
        description="Send one synthetic event to the sink (the cursor stays). 200 either way; see `accepted`.",
    )
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        sink = self.get_object()  # POST: manage_clients on the sink's team (TeamPermission)
        error = sink_test_send(sink=sink, actor=request.user)
        return Response({"accepted": not error, "error": error})
