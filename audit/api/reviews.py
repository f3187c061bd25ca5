"""The quarterly allowlist review over the REST API (audit/services/reviews.py, the same steps as the
/audit/reviews/ pages): list and read reviews (view_team), open one on demand, accept a suggestion into
the policy draft, dismiss one with a reason, sign the review off (change_policy)."""

from __future__ import annotations

import django_filters
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from audit.choices import ReviewStatus
from audit.models import PolicyReview, ReviewSuggestion
from audit.services import reviews as services
from portal.api import TeamPermission
from portal.models import Team
from portal.permissions import teams_for_user


class ReviewSuggestionSerializer(serializers.ModelSerializer):
    decided_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = ReviewSuggestion
        fields = [
            "id",
            "kind",
            "detail",
            "role",
            "server",
            "tool",
            "environment",
            "status",
            "decided_by",
            "decided_at",
            "reason",
            "draft",
            "draft_positions",
        ]
        read_only_fields = fields


class PolicyReviewSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    opened_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    signed_off_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    suggestions = ReviewSuggestionSerializer(many=True, read_only=True)

    class Meta:
        model = PolicyReview
        fields = [
            "id",
            "team",
            "quarter",
            "period_start",
            "period_end",
            "status",
            "calls",
            "opened_by",
            "opened_at",
            "signed_off_by",
            "signed_off_at",
            "sign_off_note",
            "suggestions",
        ]
        read_only_fields = fields


class ReviewOpenSerializer(serializers.Serializer):
    team = serializers.SlugRelatedField(slug_field="slug", queryset=Team.objects.none())
    period_start = serializers.DateTimeField(required=False, help_text="Default: 91 days before the end.")
    period_end = serializers.DateTimeField(required=False, help_text="Default: now.")

    def get_fields(self):
        fields = super().get_fields()
        request = self.context.get("request")
        fields["team"].queryset = teams_for_user(request.user) if request else fields["team"].queryset
        return fields


class DismissReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, help_text="Why (kept with the review).")


class SignOffSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class PolicyReviewFilter(django_filters.FilterSet):
    team = django_filters.CharFilter(field_name="team__slug", help_text="Only reviews of this team (slug).")
    status = django_filters.ChoiceFilter(choices=ReviewStatus.choices)
    quarter = django_filters.CharFilter(help_text='e.g. "2026-Q4".')

    class Meta:
        model = PolicyReview
        fields = ["team", "status", "quarter"]


class PolicyReviewViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Allowlist reviews (Layer 7), newest first; one opens by itself each quarter, `POST` opens one on
    demand. Accepting a suggestion appends its changes to the team's policy draft."""

    permission_classes = [IsAuthenticated, TeamPermission]
    serializer_class = PolicyReviewSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = PolicyReviewFilter

    def get_queryset(self):
        return (
            PolicyReview.objects.restrict(self.request.user)
            .select_related("team", "opened_by", "signed_off_by")
            .prefetch_related("suggestions__decided_by")
            .order_by("-period_end", "-pk")
        )

    def _fresh(self, review, code=status.HTTP_200_OK):
        return Response(PolicyReviewSerializer(self.get_queryset().get(pk=review.pk)).data, status=code)

    @extend_schema(request=ReviewOpenSerializer, responses={201: PolicyReviewSerializer})
    def create(self, request, *args, **kwargs):
        data = ReviewOpenSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        review = services.review_open(actor=request.user, **data.validated_data)  # checks change_policy
        return self._fresh(review, status.HTTP_201_CREATED)

    def _suggestion(self, review, suggestion_id) -> ReviewSuggestion:
        found = review.suggestions.filter(pk=suggestion_id).first()
        if found is None:
            raise exceptions.NotFound("The review has no such suggestion.")
        return found

    @extend_schema(request=None, responses=PolicyReviewSerializer)
    @action(detail=True, methods=["post"], url_path=r"suggestions/(?P<suggestion_id>[0-9]{1,12})/accept")
    def accept(self, request, pk=None, suggestion_id=None):
        """Carry the suggestion into the team's policy draft (one draft change per policy edit it needs)."""
        review = self.get_object()
        services.review_suggestion_accept(
            suggestion=self._suggestion(review, suggestion_id), actor=request.user
        )
        return self._fresh(review)

    @extend_schema(request=DismissReasonSerializer, responses=PolicyReviewSerializer)
    @action(detail=True, methods=["post"], url_path=r"suggestions/(?P<suggestion_id>[0-9]{1,12})/dismiss")
    def dismiss(self, request, pk=None, suggestion_id=None):
        review = self.get_object()
        data = DismissReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.review_suggestion_dismiss(
            suggestion=self._suggestion(review, suggestion_id),
            actor=request.user,
            reason=data.validated_data["reason"],
        )
        return self._fresh(review)

    @extend_schema(request=SignOffSerializer, responses=PolicyReviewSerializer)
    @action(detail=True, methods=["post"], url_path="sign-off")
    def sign_off(self, request, pk=None):
        """Close the review once every suggestion is accepted or dismissed."""
        review = self.get_object()
        data = SignOffSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.review_sign_off(review=review, actor=request.user, note=data.validated_data.get("note", ""))
        return self._fresh(review)
