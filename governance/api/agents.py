"""/api/v1/agents/ (people: register, list, change, revoke agents and keys) and /api/v1/client/ (whoami).

docs/enforcer-api.md, "Agent identity". Creating, changing and revoking need manage_clients (team admins);
lists start from the restricted queryset, so another team's agent is a 404. The same services as the
Agents page (governance/services/agents.py): the same rules and the same change history.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.authentication import ClientTokenAuthentication, IsEnforcementClient
from governance.models import Agent, AgentApiKey, AgentRole, Environment
from governance.services import agents as agent_services
from portal.api import TeamField
from portal.filtersets import TeamFilterSet
from portal.models import Team
from portal.permissions import MANAGE_CLIENTS, has_team_perm


class NameListField(serializers.ListField):
    """Names in, sorted names out. Renders a many-to-many manager (a plain ListField cannot: every
    list and detail of agents was a 500)."""

    def to_representation(self, data):
        if hasattr(data, "all"):
            return sorted(obj.name for obj in data.all())
        return super().to_representation(data)


class AgentApiKeySerializer(serializers.ModelSerializer):
    """A static key as listed: its prefix (the secret is shown once, when issued), whether it is revoked."""

    revoked = serializers.SerializerMethodField()

    class Meta:
        model = AgentApiKey
        fields = ["id", "prefix", "created_at", "revoked", "revoked_at"]
        read_only_fields = fields

    def get_revoked(self, obj) -> bool:
        return obj.revoked_at is not None


class AgentSerializer(serializers.ModelSerializer):
    team = TeamField()
    roles = NameListField(child=serializers.CharField(max_length=100), allow_empty=False)
    environments = NameListField(child=serializers.CharField(max_length=100), allow_empty=True)
    client_id = serializers.CharField(source="application.client_id", read_only=True, default=None)
    grant = serializers.ChoiceField(
        choices=[agent_services.GRANT_CLIENT_CREDENTIALS, agent_services.GRANT_AUTHORIZATION_CODE],
        default=agent_services.GRANT_CLIENT_CREDENTIALS,
        write_only=True,
    )
    public = serializers.BooleanField(default=False, write_only=True)
    redirect_uris = serializers.CharField(allow_blank=True, default="", write_only=True)
    revoked = serializers.SerializerMethodField()
    api_keys = AgentApiKeySerializer(many=True, read_only=True)

    class Meta:
        model = Agent
        fields = [
            "id",
            "team",
            "name",
            "slug",
            "roles",
            "environments",
            "client_id",
            "grant",
            "public",
            "redirect_uris",
            "revoked",
            "api_keys",
            "created_at",
        ]
        read_only_fields = ["id", "created_at"]

    def get_revoked(self, obj) -> bool:
        return obj.revoked_at is not None


class AgentUpdateSerializer(serializers.Serializer):
    """PATCH: what the Agents page's edit form changes. Each field is optional; a list replaces the
    agent's roles or environments. The team, slug and OAuth client (client id, kind, public) are fixed:
    naming one is a 400, not silently ignored — register a new agent instead."""

    FIXED = ("team", "slug", "client_id", "grant", "public")

    name = serializers.CharField(max_length=200, required=False)
    roles = serializers.ListField(
        child=serializers.CharField(max_length=100), allow_empty=False, required=False
    )
    environments = serializers.ListField(
        child=serializers.CharField(max_length=100), allow_empty=True, required=False
    )
    redirect_uris = serializers.CharField(
        allow_blank=True,
        required=False,
        help_text="An interactive agent's redirect URIs, space or newline separated.",
    )

    def validate(self, attrs):
        extra = sorted(set(getattr(self, "initial_data", {}) or {}) - set(self.fields))
        if extra:
            raise serializers.ValidationError(
                {
                    name: "Cannot be changed: register a new agent instead."
                    if name in self.FIXED
                    else "Unknown field."
                    for name in extra
                }
            )
        return attrs


def _resolve(team: Team, roles: list[str], environments: list[str]):
    found_roles = list(AgentRole.objects.filter(team=team, name__in=roles))
    found_envs = list(Environment.objects.filter(team=team, name__in=environments))
    missing = sorted(set(roles) - {r.name for r in found_roles})
    if missing:
        raise serializers.ValidationError({"roles": f"No such role in {team.slug}: {', '.join(missing)}."})
    missing = sorted(set(environments) - {e.name for e in found_envs})
    if missing:
        raise serializers.ValidationError({"environments": f"No such environment: {', '.join(missing)}."})
    return found_roles, found_envs


def _drf(exc: DjangoValidationError) -> serializers.ValidationError:
    return serializers.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)


class AgentViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Agents of the person's teams. Create returns the OAuth client secret once; PATCH changes what the
    edit page changes; revoke (the agent or one key) is a kill switch."""

    serializer_class = AgentSerializer
    permission_classes = [IsAuthenticated]

    filterset_class = TeamFilterSet

    def get_queryset(self):
        return (
            Agent.objects.restrict(self.request.user)
            .select_related("team", "application")
            .prefetch_related("roles", "environments", "api_keys")
        )

    def _require_manage(self, team: Team) -> None:
        if not has_team_perm(self.request.user, MANAGE_CLIENTS, team):
            raise exceptions.PermissionDenied("Registering and revoking agents needs manage_clients.")

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team = data["team"]  # TeamField: one of the teams the caller can see
        self._require_manage(team)
        roles, envs = _resolve(team, data["roles"], data["environments"])
        try:
            issued = agent_services.agent_create(
                team=team,
                name=data["name"],
                slug=data["slug"],
                roles=roles,
                environments=envs,
                grant=data["grant"],
                public=data["public"],
                redirect_uris=data["redirect_uris"],
                actor=request.user,
            )
        except DjangoValidationError as exc:
            raise _drf(exc) from None
        body = self._representation(issued.agent)
        body["client_secret"] = issued.client_secret
        return Response(body, status=status.HTTP_201_CREATED)

    def _representation(self, agent: Agent) -> dict:
        return AgentSerializer(self.get_queryset().get(pk=agent.pk)).data

    @extend_schema(
        request=AgentUpdateSerializer,
        responses=AgentSerializer,
        description=(
            "Change the agent's name, roles, environments or (interactive agents) redirect URIs, as the "
            "edit page does: recorded in the team's history, the bundles republished at once. "
            "A revoked agent cannot be changed (400)."
        ),
    )
    def partial_update(self, request, pk=None):
        agent = self.get_object()
        self._require_manage(agent.team)  # before the body is read: a refusal says nothing about it
        serializer = AgentUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        roles, envs = _resolve(
            agent.team,
            data["roles"] if "roles" in data else [r.name for r in agent.roles.all()],
            data["environments"] if "environments" in data else [e.name for e in agent.environments.all()],
        )
        try:
            agent_services.agent_update(
                agent=agent,
                roles=roles,
                environments=envs,
                name=data.get("name"),
                redirect_uris=data.get("redirect_uris"),
                actor=request.user,
            )
        except DjangoValidationError as exc:
            raise _drf(exc) from None
        return Response(self._representation(agent))

    @extend_schema(request=None, responses=AgentSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """Revoke the agent: its tokens and keys stop working on every gateway at once."""
        agent = self.get_object()
        self._require_manage(agent.team)
        agent_services.agent_revoke(agent=agent, actor=request.user)
        return Response(self._representation(agent))

    @extend_schema(
        request=None,
        responses=inline_serializer(
            "AgentApiKeyIssued",
            {
                "id": serializers.IntegerField(),
                "prefix": serializers.CharField(),
                "key": serializers.CharField(),
            },
        ),
    )
    @action(detail=True, methods=["post"], url_path="api-keys")
    def api_keys(self, request, pk=None):
        """Issue a static API key (`mcpgov_agent_…`), shown once."""
        agent = self.get_object()
        self._require_manage(agent.team)
        try:
            issued = agent_services.agent_api_key_create(agent=agent, actor=request.user)
        except DjangoValidationError as exc:
            raise _drf(exc) from None
        return Response(
            {"id": issued.api_key.pk, "prefix": issued.api_key.prefix, "key": issued.key},
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(request=None, responses=AgentApiKeySerializer)
    @action(
        detail=True,
        methods=["post"],
        url_path=r"api-keys/(?P<key_pk>[0-9]{1,18})/revoke",
        url_name="api-key-revoke",
    )
    def api_key_revoke(self, request, pk=None, key_pk=None):
        """Revoke one static key (as the page does): the bundles are republished without it at once.
        Revoking a revoked key changes nothing; a key of another agent is a 404."""
        agent = self.get_object()
        self._require_manage(agent.team)
        key = get_object_or_404(AgentApiKey.objects.restrict(request.user).filter(agent=agent), pk=key_pk)
        key = agent_services.agent_api_key_revoke(api_key=key, actor=request.user)
        return Response(AgentApiKeySerializer(key).data)


class ClientWhoamiView(APIView):
    """GET /api/v1/client/: who this enforcement-client token is, and the roles it may enforce."""

    authentication_classes = [ClientTokenAuthentication]
    permission_classes = [IsEnforcementClient]

    @extend_schema(
        responses=inline_serializer(
            "ClientWhoami",
            {
                "client": serializers.DictField(),
                "team": serializers.CharField(),
                "environment": serializers.CharField(),
                "roles": serializers.ListField(child=serializers.CharField()),
                "revoked": serializers.BooleanField(),
            },
        ),
        summary="The calling enforcement client (gateway start-up checks its role against this)",
    )
    def get(self, request):
        client = request.auth
        return Response(
            {
                "client": {"id": client.pk, "name": client.name, "expires_at": client.expires_at},
                "team": client.team.slug,
                "environment": client.environment.name,
                "roles": sorted(client.roles.values_list("name", flat=True)),
                "revoked": client.revoked_at is not None,
            }
        )
