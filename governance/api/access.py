"""Production-access requests over the API (people, session auth): the same services as the UI."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from governance.choices import AccessRequestStatus
from governance.filtersets import AccessRequestFilterSet
from governance.models import AccessRequest, AccessReview, AgentRole, Environment, McpServer
from governance.services import access as services
from portal.middleware import SESSION_KEY
from portal.models import Team
from portal.permissions import VIEW, teams_for_user


class AccessReviewSerializer(serializers.ModelSerializer):
    reviewer = serializers.CharField(source="reviewer.get_username", read_only=True)

    class Meta:
        model = AccessReview
        fields = ["reviewer", "decision", "reason", "created_at"]


class AccessRequestSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    requester = serializers.CharField(source="requester.get_username", read_only=True)
    environment = serializers.CharField(source="environment.name", read_only=True)
    role = serializers.CharField(source="role.name", read_only=True)
    servers = serializers.SerializerMethodField()
    reviews = AccessReviewSerializer(many=True, read_only=True)
    approvals = serializers.SerializerMethodField()
    revoked_by = serializers.SerializerMethodField()
    is_live = serializers.SerializerMethodField(help_text="Approved and inside its window right now.")

    class Meta:
        model = AccessRequest
        fields = [
            "id",
            "team",
            "requester",
            "environment",
            "role",
            "servers",
            "reason",
            "starts_at",
            "ends_at",
            "status",
            "approvals_required",
            "approvals",
            "review_deadline",
            "decided_at",
            "revoked_by",
            "revoked_at",
            "revoke_reason",
            "created_at",
            "reviews",
            "is_live",
        ]
        read_only_fields = fields

    def get_servers(self, obj) -> list[str]:
        return sorted(s.slug for s in obj.servers.all())

    def get_approvals(self, obj) -> int:
        return sum(1 for r in obj.reviews.all() if r.decision == AccessReview.Decision.APPROVE)

    def get_revoked_by(self, obj) -> str | None:
        return obj.revoked_by.get_username() if obj.revoked_by else None

    def get_is_live(self, obj) -> bool:
        now = timezone.now()
        return obj.status == AccessRequestStatus.APPROVED and obj.starts_at <= now < obj.ends_at


class AccessRequestCreateSerializer(serializers.Serializer):
    team = serializers.SlugField(required=False, help_text="Team slug; defaults to your current team.")
    environment = serializers.CharField(help_text="Environment name, e.g. production.")
    role = serializers.CharField(help_text="Agent role name, e.g. database_agent.")
    servers = serializers.ListField(
        child=serializers.CharField(), allow_empty=False, help_text="Server slugs."
    )
    reason = serializers.CharField(allow_blank=True, trim_whitespace=True)
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(allow_blank=True, required=False, default="")


def _current_team(request) -> Team:
    """The team named in the request (`team` slug), else the session's current team, else the first one."""
    teams = teams_for_user(request.user, VIEW)
    slug = request.data.get("team") if request.method == "POST" else request.query_params.get("team")
    if slug:
        team = teams.filter(slug=slug).first() if isinstance(slug, str) and "\x00" not in slug else None
        if team is None:
            if request.method == "POST":  # a field of the body: a validation error, like any other
                raise serializers.ValidationError({"team": ["No such team."]})
            raise Http404("No such team.")
        return team
    team_id = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
    team = (teams.filter(pk=team_id).first() if team_id else None) or teams.order_by("name").first()
    if team is None:
        raise Http404("You are not a member of any team.")
    return team


@extend_schema_view(
    list=extend_schema(summary="Production-access requests of your teams (filter: status, mine, team)"),
    retrieve=extend_schema(summary="One production-access request"),
)
class AccessRequestViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """File, review, revoke and cancel production-access requests.

    Every write goes through `governance.services.access`, which enforces the rules
    (reason required, bounded window, never your own approval, a reviewer decides once).
    """

    serializer_class = AccessRequestSerializer
    filterset_class = AccessRequestFilterSet

    def get_queryset(self):
        return (
            AccessRequest.objects.restrict(self.request.user, VIEW)
            .select_related("team", "requester", "environment", "role", "revoked_by")
            .prefetch_related("servers", "reviews__reviewer")
            .order_by("-created_at", "-pk")
        )

    def _respond(self, obj, code=status.HTTP_200_OK) -> Response:
        obj = self.get_queryset().get(pk=obj.pk)
        return Response(AccessRequestSerializer(obj, context=self.get_serializer_context()).data, status=code)

    @extend_schema(
        request=AccessRequestCreateSerializer,
        responses={201: AccessRequestSerializer},
        summary="File a production-access request",
    )
    def create(self, request):
        data = AccessRequestCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        team = _current_team(request)
        errors = {}
        environment = Environment.objects.filter(team=team, name=v["environment"]).first()
        role = AgentRole.objects.filter(team=team, name=v["role"]).first()
        servers = list(McpServer.objects.filter(team=team, slug__in=v["servers"]))
        if environment is None:
            errors["environment"] = f"No environment {v['environment']} in {team.name}."
        if role is None:
            errors["role"] = f"No agent role {v['role']} in {team.name}."
        missing = sorted(set(v["servers"]) - {s.slug for s in servers})
        if missing:
            errors["servers"] = f"No such server in {team.name}: {', '.join(missing)}."
        if errors:
            raise DjangoValidationError(errors)
        obj = services.access_request_create(
            team=team,
            requester=request.user,
            environment=environment,
            role=role,
            servers=servers,
            reason=v["reason"],
            starts_at=v["starts_at"],
            ends_at=v["ends_at"],
        )
        return self._respond(obj, status.HTTP_201_CREATED)

    def _decide(self, request, service, **extra):
        obj = self.get_object()  # 404 for other teams' requests
        reason = ReasonSerializer(data=request.data)
        reason.is_valid(raise_exception=True)
        service(access_request=obj, reason=reason.validated_data["reason"], **extra)
        return self._respond(obj)

    @extend_schema(
        request=ReasonSerializer,
        responses=AccessRequestSerializer,
        summary="Approve (as a reviewer other than the requester)",
    )
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return self._decide(request, services.access_request_approve, reviewer=request.user)

    @extend_schema(
        request=ReasonSerializer, responses=AccessRequestSerializer, summary="Deny (reason required)"
    )
    @action(detail=True, methods=["post"])
    def deny(self, request, pk=None):
        return self._decide(request, services.access_request_deny, reviewer=request.user)

    @extend_schema(
        request=ReasonSerializer,
        responses=AccessRequestSerializer,
        summary="Revoke an approved grant early (reason required)",
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        return self._decide(request, services.access_request_revoke, reviewer=request.user)

    @extend_schema(
        request=ReasonSerializer,
        responses=AccessRequestSerializer,
        summary="Cancel your own request or give back your grant",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._decide(request, services.access_request_cancel, requester=request.user)
