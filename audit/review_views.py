"""The quarterly review pages: the team's reviews, one review's suggestions (accept into the draft or
dismiss with a reason), sign-off, and opening a review on demand. Writes go through
audit/services/reviews.py and need change_policy; reading needs view_team."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from audit.models import PolicyReview, ReviewSuggestion
from audit.services import reviews as services
from portal.pages import get_team_object, require_perm, team_view
from portal.permissions import CHANGE_POLICY


def _reviews(request):
    return PolicyReview.objects.restrict(request.user).filter(team=request.team)


@team_view
def review_list(request):
    rows = _reviews(request).select_related("signed_off_by", "opened_by")[:100]
    return render(request, "audit/reviews/list.html", {"reviews": rows})


@require_POST
@team_view
def review_open(request):
    require_perm(request, CHANGE_POLICY)
    review = services.review_open(team=request.team, actor=request.user)
    messages.success(request, f"Review opened: {review.suggestions.count()} suggestions.")
    return redirect("audit:review-detail", pk=review.pk)


@team_view
def review_detail(request, pk: int):
    review = get_team_object(request, _reviews(request).select_related("signed_off_by", "opened_by"), pk=pk)
    suggestions = review.suggestions.select_related("decided_by", "draft")
    return render(request, "audit/reviews/detail.html", {"review": review, "suggestions": suggestions})


def _suggestion_step(request, pk: int, step, success: str):
    suggestion = get_team_object(
        request,
        ReviewSuggestion.objects.filter(review__in=_reviews(request)).select_related("review"),
        perm=CHANGE_POLICY,
        pk=pk,
    )
    try:
        step(suggestion)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, success)
    return redirect("audit:review-detail", pk=suggestion.review_id)


@require_POST
@team_view
def suggestion_accept(request, pk: int):
    return _suggestion_step(
        request,
        pk,
        lambda s: services.review_suggestion_accept(suggestion=s, actor=request.user),
        "Accepted into the policy draft.",
    )


@require_POST
@team_view
def suggestion_dismiss(request, pk: int):
    reason = request.POST.get("reason", "")
    return _suggestion_step(
        request,
        pk,
        lambda s: services.review_suggestion_dismiss(suggestion=s, actor=request.user, reason=reason),
        "Suggestion dismissed.",
    )


@require_POST
@team_view
def review_sign_off(request, pk: int):
    review = get_team_object(request, _reviews(request), perm=CHANGE_POLICY, pk=pk)
    try:
        services.review_sign_off(review=review, actor=request.user, note=request.POST.get("note", ""))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "Review signed off.")
    return redirect("audit:review-detail", pk=review.pk)
