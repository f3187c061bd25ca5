"""The draft simulation over the REST API: what a team's open draft would have changed over the calls
recorded in a window (audit/services/simulation.py, the same run as the /audit/simulation/ page).
It replays every session of the team, so it needs change_policy, like the page."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.services.simulation import draft_simulate
from governance.choices import DraftStatus
from governance.models import Environment, PolicyDraft
from portal.permissions import CHANGE_POLICY, has_team_perm

MAX_WINDOW = timedelta(days=92)  # a quarter of recorded calls at most


class SimulationQuerySerializer(serializers.Serializer):
    days = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_WINDOW.days, help_text="The last N days (default 7)."
    )
    since = serializers.DateTimeField(required=False, help_text="Window start (instead of days).")
    until = serializers.DateTimeField(required=False, help_text="Window end (default: now).")
    environment = serializers.CharField(
        required=False, max_length=100, help_text="Only this environment (name)."
    )

    def validate(self, attrs):
        if "days" in attrs and "since" in attrs:
            raise serializers.ValidationError("Give either days or since, not both.")
        until = attrs.get("until") or timezone.now()
        since = attrs.get("since") or until - timedelta(days=attrs.get("days", 7))
        if since >= until:
            raise serializers.ValidationError({"since": ["The window must start before it ends."]})
        if until - since > MAX_WINDOW:
            raise serializers.ValidationError({"since": [f"The window is at most {MAX_WINDOW.days} days."]})
        return {"since": since, "until": until, "environment": attrs.get("environment") or None}


class CallChangeSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    seq = serializers.IntegerField()
    ts = serializers.DateTimeField()
    role = serializers.CharField()
    server = serializers.CharField()
    tool = serializers.CharField()
    live = serializers.CharField(
        help_text='"allow", "approval" or "refuse (<trigger>)" under the live bundle.'
    )
    draft = serializers.CharField(help_text="The same under the draft's bundle.")
    reason = serializers.CharField()
    session_url = serializers.SerializerMethodField()

    def get_session_url(self, change) -> str:
        return f"/audit/sessions/{change.session_id}/"


class EnvironmentSimulationSerializer(serializers.Serializer):
    environment = serializers.CharField()
    calls = serializers.IntegerField()
    sessions = serializers.IntegerField()
    newly_refused_count = serializers.IntegerField()
    newly_allowed_count = serializers.IntegerField()
    refused_by_trigger = serializers.DictField(child=serializers.IntegerField())
    newly_refused = CallChangeSerializer(many=True, help_text="The first 200 (all are counted).")
    newly_allowed = CallChangeSerializer(many=True, help_text="The first 200 (all are counted).")
    halted_sessions = serializers.ListField(
        child=serializers.CharField(), help_text="Sessions that would halt under the draft and did not today."
    )


class SimulationReportSerializer(serializers.Serializer):
    draft = serializers.IntegerField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    calls = serializers.IntegerField()
    seconds = serializers.FloatField()
    error = serializers.CharField(help_text="Non-empty: the draft no longer applies (why).")
    environments = EnvironmentSimulationSerializer(many=True)


class DraftSimulationView(APIView):
    """Replay the window's recorded calls under the live bundle and under the draft's, with the gateways'
    decide(): the calls the draft would newly refuse (by trigger) or allow, and the sessions it would halt."""

    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=[SimulationQuerySerializer], responses=SimulationReportSerializer)
    def get(self, request, pk: int):
        draft = PolicyDraft.objects.restrict(request.user).select_related("team").filter(pk=pk).first()
        if draft is None:
            raise exceptions.NotFound("No such draft.")
        if not has_team_perm(request.user, CHANGE_POLICY, draft.team):
            raise exceptions.PermissionDenied("Simulating a draft needs the change_policy permission.")
        if draft.status != DraftStatus.OPEN:
            raise exceptions.ValidationError(
                {
                    "draft": [
                        f"This draft is {draft.get_status_display().lower()}: only an open draft is simulated."
                    ]
                }
            )
        query = SimulationQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        name = query.validated_data["environment"]
        if name and not Environment.objects.filter(team=draft.team, name=name).exists():
            raise exceptions.ValidationError({"environment": [f"No environment {name!r} in this team."]})
        report = draft_simulate(draft=draft, **query.validated_data)
        data = {
            "draft": draft.pk,
            "since": report.since,
            "until": report.until,
            "calls": report.calls,
            "seconds": report.seconds,
            "error": report.error,
            "environments": report.environments,
        }
        return Response(SimulationReportSerializer(data).data)
