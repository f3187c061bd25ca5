"""Policy drafts over the REST API: the team's drafts with their changes and the diff of the next bundles,
and the workflow steps (publish, approve, discard, take one change out) through the same services as the
draft page (governance/services/drafts.py). Reading needs view_team, every step change_policy."""

from __future__ import annotations

import django_filters
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from governance.choices import DraftStatus
from governance.models import PolicyDraft, PolicyDraftChange
from governance.services import drafts as services
from portal.api import TeamPermission


class PolicyDraftChangeSerializer(serializers.ModelSerializer):
    author = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = PolicyDraftChange
        fields = ["position", "operation", "summary", "author", "created_at"]
        read_only_fields = fields


class PolicyDraftSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    approved_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    closed_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    changes = PolicyDraftChangeSerializer(many=True, read_only=True)

    class Meta:
        model = PolicyDraft
        fields = [
            "id",
            "team",
            "status",
            "title",
            "created_by",
            "created_at",
            "approved_by",
            "approved_at",
            "closed_by",
            "closed_at",
            "close_reason",
            "published_versions",
            "changes",
            "shadow_environments",
        ]
        read_only_fields = fields

    shadow_environments = serializers.SerializerMethodField(
        help_text="Environments where this draft is being evaluated in shadow."
    )

    def get_shadow_environments(self, draft) -> list[str]:
        return sorted(s.environment.name for s in draft.shadow_bundles.all())


class EnvironmentPreviewSerializer(serializers.Serializer):
    environment = serializers.CharField(source="environment.name")
    is_production = serializers.BooleanField(source="environment.is_production")
    live_version = serializers.IntegerField(allow_null=True, help_text="null: nothing published yet.")
    changed = serializers.BooleanField()
    lines = serializers.ListField(
        child=serializers.CharField(), help_text='e.g. "code_agent gains github_api in staging".'
    )


class DraftPreviewSerializer(serializers.Serializer):
    changed = serializers.BooleanField()
    affects_production = serializers.BooleanField()
    needs_approval = serializers.BooleanField(
        help_text="The team requires a second approver and the draft changes a production bundle."
    )
    error = serializers.CharField(help_text="Non-empty: the draft no longer applies (why).")
    environments = EnvironmentPreviewSerializer(many=True)


class PolicyDraftDetailSerializer(PolicyDraftSerializer):
    preview = serializers.SerializerMethodField(
        help_text="The diff of the next bundle of each environment (open drafts only; null otherwise)."
    )

    class Meta(PolicyDraftSerializer.Meta):
        fields = [*PolicyDraftSerializer.Meta.fields, "preview"]
        read_only_fields = fields

    @extend_schema_field(DraftPreviewSerializer(allow_null=True))
    def get_preview(self, draft):
        if draft.status != DraftStatus.OPEN:
            return None
        preview = services.draft_preview(draft=draft)
        return DraftPreviewSerializer(
            {
                "changed": preview.changed,
                "affects_production": preview.affects_production,
                "needs_approval": draft.team.policy_drafts_require_second_approver
                and preview.affects_production,
                "error": preview.error,
                "environments": preview.environments,
            }
        ).data


class DraftDiscardSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500)


class PolicyDraftFilter(django_filters.FilterSet):
    team = django_filters.CharFilter(field_name="team__slug", help_text="Only drafts of this team (slug).")
    status = django_filters.ChoiceFilter(choices=DraftStatus.choices)

    class Meta:
        model = PolicyDraft
        fields = ["team", "status"]


class PolicyDraftViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """A team's policy drafts (at most one open), newest first. Edits of servers, roles, environments,
    limits and triggers made through the API by a team in draft mode answer 202 and land in the open
    draft; these steps publish it as one version per changed environment, or drop it.

    With the team's two-person rule, publishing a draft that changes a production bundle needs the
    approval of an admin who authored none of its changes (403 otherwise, saying so)."""

    permission_classes = [IsAuthenticated, TeamPermission]
    filter_backends = [DjangoFilterBackend]
    filterset_class = PolicyDraftFilter

    def get_serializer_class(self):
        return PolicyDraftSerializer if self.action == "list" else PolicyDraftDetailSerializer

    def get_queryset(self):
        return (
            PolicyDraft.objects.restrict(self.request.user)
            .select_related("team", "created_by", "approved_by", "closed_by")
            .prefetch_related("changes__author", "shadow_bundles__environment")
            .order_by("-created_at", "-pk")
        )

    def _done(self, draft):
        return Response(PolicyDraftDetailSerializer(self.get_queryset().get(pk=draft.pk)).data)

    @extend_schema(request=None, responses=PolicyDraftDetailSerializer)
    @action(detail=True, methods=["post"])
    def publish(self, request, pk=None):
        """Apply the draft's changes in order and publish each environment whose bundle changed."""
        draft = services.draft_publish(draft=self.get_object(), actor=request.user)
        return self._done(draft)

    @extend_schema(request=None, responses=PolicyDraftDetailSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        """A second admin's approval (never one of the draft's authors); any later change voids it."""
        return self._done(services.draft_approve(draft=self.get_object(), actor=request.user))

    @extend_schema(request=DraftDiscardSerializer, responses=PolicyDraftDetailSerializer)
    @action(detail=True, methods=["post"])
    def discard(self, request, pk=None):
        """Drop the draft; nothing of it reaches a gateway. The draft is kept, closed, with the reason."""
        data = DraftDiscardSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        draft = services.draft_discard(
            draft=self.get_object(), actor=request.user, reason=data.validated_data.get("reason", "")
        )
        return self._done(draft)

    @extend_schema(request=None, responses=PolicyDraftDetailSerializer)
    @action(detail=True, methods=["post", "delete"])
    def shadow(self, request, pk=None):
        """POST: publish the draft as a shadow bundle (gateways decide each call with it too and record
        what it would have done, without enforcing it). DELETE: drop the team's shadow."""
        draft = self.get_object()
        if request.method == "DELETE":
            services.shadow_drop(team=draft.team, actor=request.user)
        else:
            services.draft_shadow_publish(draft=draft, actor=request.user)
        return self._done(draft)

    @extend_schema(request=None, responses=PolicyDraftDetailSerializer)
    @action(detail=True, methods=["delete"], url_path=r"changes/(?P<position>[0-9]{1,9})")
    def remove_change(self, request, pk=None, position=None):
        """Take one change out (the later ones are renumbered and must still apply without it)."""
        draft = services.draft_change_remove(
            draft=self.get_object(), position=int(position), actor=request.user
        )
        return self._done(draft)
