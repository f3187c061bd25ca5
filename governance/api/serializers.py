"""Serializers for the policy API: shapes and field checks only; writes go through the services."""

from __future__ import annotations

from rest_framework import serializers

from governance.choices import AccessClass, Permission, RuleKind
from governance.models import (
    AgentRole,
    Environment,
    GlobalRateLimit,
    McpServer,
    McpTool,
    ServerBinding,
    ServerRateLimit,
    TriggerSettings,
)
from mcpgov.bundle import tool_definition_hash
from portal import api as portal_api
from portal.models import Team
from portal.permissions import CHANGE_POLICY, VIEW, teams_for_user


class TeamField(portal_api.TeamField):
    """The owning team by slug, among the teams the user can see (a service then checks the write).

    Omitted on create, it defaults to the user's only team with change_policy (or only team).
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault(
            "help_text", "Team slug. Needed on create when you can change policy in several teams."
        )
        super().__init__(**kwargs)


def default_team(user) -> Team | None:
    for perm in (CHANGE_POLICY, VIEW):
        teams = list(teams_for_user(user, perm)[:2])
        if len(teams) == 1:
            return teams[0]
        if teams:
            return None
    return None


class TeamScopedSerializer(serializers.ModelSerializer):
    """`team` is chosen on create and fixed afterwards."""

    team = TeamField()

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if self.instance is not None:
            attrs.pop("team", None)
        elif "team" not in attrs:
            team = default_team(self.context["request"].user)
            if team is None:
                raise serializers.ValidationError({"team": "Choose the team (its slug)."})
            attrs["team"] = team
        return attrs

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["team"] = instance.team.slug
        return data


class ToolSerializer(serializers.ModelSerializer):
    access_class = serializers.CharField(
        read_only=True, help_text="The effective class: the override, else derived from readOnlyHint."
    )
    definition_hash = serializers.SerializerMethodField(
        help_text="What the bundle pins (null: never discovered)."
    )
    server = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = McpTool
        fields = [
            "id",
            "server",
            "name",
            "title",
            "description",
            "input_schema",
            "annotations",
            "read_only_hint",
            "destructive_hint",
            "access_class",
            "access_class_override",
            "approval_required",
            "definition_hash",
            "discovered_at",
        ]
        read_only_fields = [
            "id",
            "server",
            "name",
            "title",
            "description",
            "input_schema",
            "annotations",
            "read_only_hint",
            "destructive_hint",
            "discovered_at",
        ]

    def get_definition_hash(self, tool) -> str | None:
        if tool.discovered_at is None:
            return None
        return tool_definition_hash(tool.name, tool.description, tool.input_schema)


class ToolUpdateSerializer(serializers.Serializer):
    access_class_override = serializers.ChoiceField(
        choices=[("", "No override"), *AccessClass.choices],
        required=False,
        help_text='"read" or "write" overrides the annotations; "" clears the override.',
    )
    approval_required = serializers.BooleanField(required=False)


class ServerSerializer(TeamScopedSerializer):
    tools = ToolSerializer(many=True, read_only=True)

    class Meta:
        model = McpServer
        fields = [
            "id",
            "team",
            *McpServer.FIELDS,
            "tools",
            "tools_discovered_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "tools", "tools_discovered_at", "created_at", "updated_at"]
        validators: list = []  # uniqueness and cross-field rules are the service's (model.full_clean)


class RoleSerializer(TeamScopedSerializer):
    allowed_servers = serializers.SerializerMethodField()
    forbidden_servers = serializers.SerializerMethodField()

    class Meta:
        model = AgentRole
        fields = [
            "id",
            "team",
            "name",
            "description",
            "allowed_servers",
            "forbidden_servers",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        validators: list = []

    def get_allowed_servers(self, role) -> list[str]:
        return role.server_slugs(RuleKind.ALLOWED)

    def get_forbidden_servers(self, role) -> list[str]:
        return role.server_slugs(RuleKind.FORBIDDEN)


class RoleServerSerializer(serializers.Serializer):
    server = serializers.CharField(help_text="Server slug (of the role's team).")
    kind = serializers.ChoiceField(
        choices=RuleKind.choices, required=False, help_text="allowed or forbidden (add only)."
    )


class BindingSummarySerializer(serializers.ModelSerializer):
    server = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = ServerBinding
        fields = ["id", "server", "target_kind", "target", "permission"]


class EnvironmentSerializer(TeamScopedSerializer):
    bindings = BindingSummarySerializer(many=True, read_only=True)
    forbidden_patterns = serializers.ListField(child=serializers.CharField(), required=False)

    class Meta:
        model = Environment
        fields = [
            "id",
            "team",
            "name",
            "description",
            "is_production",
            "requires_authorization",
            "forbidden_patterns",
            "note",
            "order",
            "bindings",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "bindings", "created_at", "updated_at"]
        validators: list = []


class BindingSerializer(serializers.ModelSerializer):
    environment = serializers.PrimaryKeyRelatedField(queryset=Environment.objects.none())
    server = serializers.CharField(help_text="Server slug (of the environment's team).")
    permission = serializers.ChoiceField(choices=Permission.choices, required=False)

    class Meta:
        model = ServerBinding
        fields = ["id", "environment", "server", "target_kind", "target", "permission", "order"]
        read_only_fields = ["id"]
        validators: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        self.fields["environment"].queryset = Environment.objects.restrict(request.user if request else None)
        if self.instance is not None and not isinstance(self.instance, list | tuple):
            self.fields["environment"].read_only = True
            self.fields["server"].read_only = True

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if self.instance is None:
            env = attrs["environment"]
            server = McpServer.objects.filter(team_id=env.team_id, slug=attrs["server"]).first()
            if server is None:
                raise serializers.ValidationError({"server": f"No server {attrs['server']!r} in this team."})
            attrs["server"] = server
        return attrs

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["server"] = instance.server.slug
        data["environment_name"] = instance.environment.name
        data["team"] = instance.environment.team.slug
        return data


class ServerRateLimitSerializer(TeamScopedSerializer):
    server = serializers.CharField(help_text="Server slug (of the team).")

    class Meta:
        model = ServerRateLimit
        fields = ["id", "team", "server", *ServerRateLimit.FIELDS]
        read_only_fields = ["id"]
        validators: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance is not None and not isinstance(self.instance, list | tuple):
            self.fields["server"].read_only = True

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if self.instance is None:
            server = McpServer.objects.filter(team=attrs["team"], slug=attrs["server"]).first()
            if server is None:
                raise serializers.ValidationError({"server": f"No server {attrs['server']!r} in this team."})
            attrs["server"] = server
        return attrs

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["server"] = instance.server.slug
        return data


class GlobalRateLimitSerializer(serializers.ModelSerializer):
    team = serializers.SerializerMethodField()

    class Meta:
        model = GlobalRateLimit
        fields = ["team", "max_calls_per_session", "max_calls_per_minute", "pause_at_percent"]

    def get_team(self, limits) -> str:
        return limits.team.slug


class TriggerSettingsSerializer(serializers.ModelSerializer):
    team = serializers.SerializerMethodField()
    production_url_words = serializers.ListField(child=serializers.CharField(), required=False)

    class Meta:
        model = TriggerSettings
        fields = ["team", "cascade_write_threshold", "large_data_bytes", "production_url_words"]

    def get_team(self, settings_) -> str:
        return settings_.team.slug


__all__ = [
    "BindingSerializer",
    "EnvironmentSerializer",
    "GlobalRateLimitSerializer",
    "RoleSerializer",
    "RoleServerSerializer",
    "ServerRateLimitSerializer",
    "ServerSerializer",
    "TeamField",
    "ToolSerializer",
    "ToolUpdateSerializer",
    "TriggerSettingsSerializer",
]


class TeamPolicySettingsSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="slug", read_only=True)

    class Meta:
        model = Team
        fields = [
            "team",
            "bundle_ttl_seconds",
            "policy_edits_immediate",
            "policy_drafts_require_second_approver",
        ]


class PolicyDiffInputSerializer(serializers.Serializer):
    team = TeamField(required=True)
    yaml = serializers.CharField(
        trim_whitespace=False, max_length=2_000_000, help_text="The policy file (docs/policy-yaml.md)."
    )


class PolicyDiffSerializer(serializers.Serializer):
    team = serializers.CharField()
    changed = serializers.BooleanField(help_text="Importing the file would change the live policy.")
    changes = serializers.ListField(
        child=serializers.CharField(), help_text="One line per object: + added, ~ changed, - removed."
    )
    report = serializers.ListField(
        child=serializers.CharField(), help_text="The import report, line by line."
    )
