"""Policy API viewsets and the public keys endpoint. Thin: parse, call a service, serialize.

Every queryset starts from `.restrict(request.user)`, so another team's object is a 404;
object writes need change_policy (TeamPermission, before anything runs); creates are
checked by the service (DRF does not apply object permissions to creates).
"""

from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api import serializers as s
from governance.choices import DEFAULT_PRODUCTION_URL_WORDS
from governance.filtersets import BindingFilterSet, ToolFilterSet
from governance.models import (
    AgentRole,
    Environment,
    GlobalRateLimit,
    McpServer,
    McpTool,
    RoleServerRule,
    ServerBinding,
    ServerRateLimit,
    TriggerSettings,
)
from governance.services import discovery, policy_yaml
from governance.services import environments as environment_services
from governance.services import limits as limit_services
from governance.services import roles as role_services
from governance.services import servers as server_services
from governance.services import teams as team_services
from governance.services.signing import jwks_document
from portal.api import TeamField, TeamPermission
from portal.filtersets import TeamFilterSet
from portal.models import Team
from portal.permissions import VIEW, teams_for_user


class TeamScopedViewSet(viewsets.ModelViewSet):
    """CRUD on one team-owned model; subclasses name the services in perform_*. `?team=<slug>` filters."""

    permission_classes = [IsAuthenticated, TeamPermission]
    filterset_class = TeamFilterSet

    def base_queryset(self):
        raise NotImplementedError

    def get_queryset(self):
        return self.base_queryset()


class ServerViewSet(TeamScopedViewSet):
    """MCP servers of the catalogue, with their tools (read-only here; see /tools/)."""

    serializer_class = s.ServerSerializer

    def base_queryset(self):
        return McpServer.objects.restrict(self.request.user).select_related("team").prefetch_related("tools")

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        serializer.instance = server_services.server_create(
            team=data.pop("team"), actor=self.request.user, **data
        )

    def perform_update(self, serializer):
        serializer.instance = server_services.server_update(
            server=serializer.instance, actor=self.request.user, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        server_services.server_delete(server=instance, actor=self.request.user)

    @extend_schema(
        request=None,
        responses={
            200: inline_serializer(
                "DiscoveryResult",
                {
                    "added": serializers.ListField(child=serializers.CharField()),
                    "updated": serializers.ListField(child=serializers.CharField()),
                    "removed": serializers.ListField(child=serializers.CharField()),
                },
            )
        },
        description=(
            "Ask an HTTP server for its tools from the portal (through the SSRF guard) and record them. "
            "Stdio servers are refused (400 discovery_refused) unless the operator enabled the sandbox: "
            "discover them on the enforcement side (`mcpgov discover`). 502 discovery_failed: the server "
            "did not answer as an MCP server; nothing was written."
        ),
    )
    @action(detail=True, methods=["post"])
    def discover(self, request, pk=None):
        server = self.get_object()  # POST: change_policy on the server's team (TeamPermission)
        return Response(discovery.server_discover_tools(server=server, actor=request.user))


class ToolViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet
):
    """Tools as discovered; an admin overrides the read/write class or requires approval per call."""

    permission_classes = [IsAuthenticated, TeamPermission]
    serializer_class = s.ToolSerializer
    filterset_class = ToolFilterSet

    def get_queryset(self):
        return McpTool.objects.restrict(self.request.user).select_related("server__team")

    def get_object_team(self, tool):
        return tool.server.team

    @extend_schema(request=s.ToolUpdateSerializer, responses=s.ToolSerializer)
    def update(self, request, *args, **kwargs):
        tool = self.get_object()
        data = s.ToolUpdateSerializer(data=request.data, partial=kwargs.get("partial", False))
        data.is_valid(raise_exception=True)
        tool = server_services.tool_update(tool=tool, actor=request.user, **data.validated_data)
        return Response(s.ToolSerializer(tool, context=self.get_serializer_context()).data)


class RoleViewSet(TeamScopedViewSet):
    """Agent roles with their allowed and forbidden servers (default deny)."""

    serializer_class = s.RoleSerializer

    def base_queryset(self):
        return (
            AgentRole.objects.restrict(self.request.user)
            .select_related("team")
            .prefetch_related(Prefetch("rules", queryset=RoleServerRule.objects.select_related("server")))
        )

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        serializer.instance = role_services.role_create(
            team=data.pop("team"), actor=self.request.user, **data
        )

    def perform_update(self, serializer):
        serializer.instance = role_services.role_update(
            role=serializer.instance, actor=self.request.user, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        role_services.role_delete(role=instance, actor=self.request.user)

    def _role_and_server(self, request):
        role = self.get_object()
        data = s.RoleServerSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        server = McpServer.objects.filter(team_id=role.team_id, slug=data.validated_data["server"]).first()
        if server is None:
            raise serializers.ValidationError(
                {"server": f"No server {data.validated_data['server']!r} in this team."}
            )
        return role, server, data.validated_data

    def _fresh(self, role):
        return s.RoleSerializer(
            self.base_queryset().get(pk=role.pk), context=self.get_serializer_context()
        ).data

    @extend_schema(request=s.RoleServerSerializer, responses=s.RoleSerializer)
    @action(detail=True, methods=["post"], url_path="add-server")
    def add_server(self, request, pk=None):
        """Put a server on the role's allowed or forbidden list (never both)."""
        role, server, data = self._role_and_server(request)
        if "kind" not in data:
            raise serializers.ValidationError({"kind": "Say allowed or forbidden."})
        role_services.role_server_add(role=role, server=server, kind=data["kind"], actor=request.user)
        return Response(self._fresh(role))

    @extend_schema(request=s.RoleServerSerializer, responses=s.RoleSerializer)
    @action(detail=True, methods=["post"], url_path="remove-server")
    def remove_server(self, request, pk=None):
        """Take a server off the role's allowed or forbidden list."""
        role, server, data = self._role_and_server(request)
        rule = RoleServerRule.objects.filter(role=role, server=server).first()
        if rule is None or ("kind" in data and rule.kind != data["kind"]):
            raise serializers.ValidationError({"server": f"{server.slug} is not on {role.name}'s lists."})
        role_services.role_server_remove(rule=rule, actor=request.user)
        return Response(self._fresh(role))


class EnvironmentViewSet(TeamScopedViewSet):
    """Environments, their forbidden patterns and whether access needs authorization."""

    serializer_class = s.EnvironmentSerializer

    def base_queryset(self):
        return (
            Environment.objects.restrict(self.request.user)
            .select_related("team")
            .prefetch_related(Prefetch("bindings", queryset=ServerBinding.objects.select_related("server")))
        )

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        serializer.instance = environment_services.environment_create(
            team=data.pop("team"), actor=self.request.user, **data
        )

    def perform_update(self, serializer):
        serializer.instance = environment_services.environment_update(
            environment=serializer.instance, actor=self.request.user, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        environment_services.environment_delete(environment=instance, actor=self.request.user)


class BindingViewSet(TeamScopedViewSet):
    """Which servers an environment allows, pointing where, read-only or read-write."""

    serializer_class = s.BindingSerializer
    filterset_class = BindingFilterSet

    def base_queryset(self):
        return ServerBinding.objects.restrict(self.request.user).select_related("environment__team", "server")

    def get_object_team(self, binding):
        return binding.environment.team

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        serializer.instance = environment_services.binding_set(
            environment=data.pop("environment"), server=data.pop("server"), actor=self.request.user, **data
        )

    def perform_update(self, serializer):
        binding = serializer.instance
        serializer.instance = environment_services.binding_set(
            environment=binding.environment,
            server=binding.server,
            actor=self.request.user,
            **serializer.validated_data,
        )

    def perform_destroy(self, instance):
        environment_services.binding_delete(binding=instance, actor=self.request.user)


class ServerRateLimitViewSet(TeamScopedViewSet):
    """Per-server rate limits (hard stops, enforced before the call)."""

    serializer_class = s.ServerRateLimitSerializer

    def base_queryset(self):
        return ServerRateLimit.objects.restrict(self.request.user).select_related("team", "server")

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        serializer.instance = limit_services.server_limits_set(
            team=data.pop("team"), server=data.pop("server"), actor=self.request.user, **data
        )

    def perform_update(self, serializer):
        limits = serializer.instance
        serializer.instance = limit_services.server_limits_set(
            team=limits.team, server=limits.server, actor=self.request.user, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        limit_services.server_limits_delete(limits=instance, actor=self.request.user)


class TeamSettingViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet
):
    """A one-per-team setting addressed by the team's slug; absent rows show the defaults."""

    permission_classes = [IsAuthenticated, TeamPermission]
    lookup_field = "slug"
    lookup_url_kwarg = "team"
    model: type
    service = None

    def get_queryset(self):
        return teams_for_user(self.request.user, VIEW).order_by("slug")

    def get_object_team(self, team):
        return team

    def setting_of(self, team):
        row = self.model.objects.filter(team=team).select_related("team").first()
        return row or self.model(team=team)

    def list(self, request, *args, **kwargs):
        teams = self.paginate_queryset(self.get_queryset())
        data = self.get_serializer([self.setting_of(t) for t in teams], many=True).data
        return self.get_paginated_response(data)

    def retrieve(self, request, *args, **kwargs):
        return Response(self.get_serializer(self.setting_of(self.get_object())).data)

    def update(self, request, *args, **kwargs):
        team = self.get_object()
        serializer = self.get_serializer(
            self.setting_of(team), data=request.data, partial=kwargs.get("partial", False)
        )
        serializer.is_valid(raise_exception=True)
        setting = type(self).service(team=team, actor=request.user, **serializer.validated_data)
        return Response(self.get_serializer(setting).data)


class GlobalRateLimitViewSet(TeamSettingViewSet):
    """The team's global limits: calls per session and per minute, and the pause percentage."""

    serializer_class = s.GlobalRateLimitSerializer
    model = GlobalRateLimit
    service = staticmethod(limit_services.global_limits_set)


class TriggerSettingsViewSet(TeamSettingViewSet):
    """Kill-switch trigger settings: cascade threshold, large-data bytes, production URL words."""

    serializer_class = s.TriggerSettingsSerializer
    model = TriggerSettings
    service = staticmethod(limit_services.trigger_settings_set)

    def setting_of(self, team):
        row = super().setting_of(team)
        if row.pk is None:
            row.production_url_words = list(DEFAULT_PRODUCTION_URL_WORDS)
        return row


class TeamPolicySettingsViewSet(TeamSettingViewSet):
    """The team's bundle lifetime and how policy edits reach the bundle (at once, or through a draft)."""

    serializer_class = s.TeamPolicySettingsSerializer
    service = staticmethod(team_services.team_policy_settings_set)

    def setting_of(self, team):
        return team


class PolicyDiffView(APIView):
    """What importing a policy file would change against the live policy (a dry-run import).

    Nothing is written. For a GitOps job: `changed` is false when the repository matches the portal."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=s.PolicyDiffInputSerializer, responses=s.PolicyDiffSerializer)
    def post(self, request):
        data = s.PolicyDiffInputSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        team = data.validated_data["team"]  # among the teams the user can see
        try:
            report = policy_yaml.policy_import(team=team, text=data.validated_data["yaml"], dry_run=True)
        except policy_yaml.PolicyImportError as exc:
            raise serializers.ValidationError({"yaml": [str(p) for p in exc.problems]}) from exc
        return Response(
            {
                "team": team.slug,
                "changed": report.changed,
                "changes": [str(c) for c in report.changes],
                "report": report.lines,
            }
        )


class KeysQuerySerializer(serializers.Serializer):
    # Public keys are public: any team by slug (TeamField otherwise offers the caller's teams only).
    team = TeamField(queryset=Team.objects.all(), help_text="The team's slug; only its keys are listed.")


class KeysView(APIView):
    """One team's JWKS: its bundle- and digest-signing keys (active and published). No authentication.

    Each team has its own keys, so `?team=<slug>` is required; only that team's keys are listed.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        parameters=[KeysQuerySerializer],
        responses={
            200: inline_serializer("Jwks", {"keys": serializers.ListField(child=serializers.DictField())}),
            400: inline_serializer(
                "KeysError", {"detail": serializers.CharField(), "code": serializers.CharField()}
            ),
            404: inline_serializer(
                "KeysNotFound", {"detail": serializers.CharField(), "code": serializers.CharField()}
            ),
        },
    )
    def get(self, request):
        query = KeysQuerySerializer(data=request.query_params)
        if not query.is_valid():
            [error] = query.errors["team"]
            if error.code == "does_not_exist":
                return Response(
                    {"detail": "No such team.", "code": "not_found"}, status=status.HTTP_404_NOT_FOUND
                )
            if error.code in ("required", "null"):  # absent, or empty ("" is None to a related field)
                return Response(
                    {
                        "detail": "Signing keys are per team: ask for /api/v1/keys/?team=<slug>.",
                        "code": "team_required",
                    },
                    status=status.HTTP_400_BAD_REQUEST,
                )
            raise serializers.ValidationError(query.errors)  # a NUL, a malformed value: the API's 400
        team = query.validated_data["team"]
        response = Response(jwks_document(team=team), status=status.HTTP_200_OK)
        response["Cache-Control"] = "public, max-age=60"
        return response
