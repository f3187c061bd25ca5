"""Production-access tickets: requesters file them and watch them count down; reviewers decide."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from governance import selectors
from governance.choices import AccessRequestStatus as Status
from governance.forms.access import AccessRequestForm, DecisionForm
from governance.models import AccessReview
from governance.services import access as services
from portal.pages import form_page, get_team_object, may, require_perm, team_view
from portal.permissions import REQUEST_ACCESS, REVIEW_ACCESS


def _requests(request):
    return selectors.access_requests_for_team(user=request.user, team=request.team)


@team_view
def access_list(request):
    qs = _requests(request)
    now = timezone.now()
    can_review = may(request, REVIEW_ACCESS)
    return render(
        request,
        "governance/access/list.html",
        {
            "mine": qs.filter(requester=request.user).order_by("-created_at")[:50],
            "pending": qs.filter(status=Status.PENDING, review_deadline__gt=now)
            .exclude(requester=request.user)
            .order_by("review_deadline")
            if can_review
            else [],
            "live": qs.filter(status=Status.APPROVED, ends_at__gt=now).order_by("ends_at"),
            "recent": qs.exclude(status__in=[Status.PENDING, Status.APPROVED]).order_by("-created_at")[:20],
            "can_request": may(request, REQUEST_ACCESS),
            "can_review": can_review,
            "now": now,
        },
    )


@team_view
def access_create(request):
    require_perm(request, REQUEST_ACCESS)
    return form_page(
        request,
        form=AccessRequestForm(
            request.POST or None, team=request.team, initial={"role": request.GET.get("role")}
        ),
        service=services.access_request_create,
        team=request.team,
        requester=request.user,
        template="governance/access/form.html",
        success_message=lambda obj: f"Request #{obj.pk} filed; reviewers have been notified.",
        success_url=lambda obj: reverse("governance:access-detail", args=[obj.pk]),
    )


@team_view
def access_detail(request, pk: int):
    obj = get_team_object(request, _requests(request), pk=pk)
    user = request.user
    can_review = may(request, REVIEW_ACCESS)
    reviewed = any(r.reviewer_id == user.pk for r in obj.reviews.all())
    pending = obj.status == Status.PENDING and obj.review_deadline > timezone.now()
    history = selectors.access_request_history(team=request.team, access_request=obj)
    return render(
        request,
        "governance/access/detail.html",
        {
            "req": obj,
            "approvals": sum(1 for r in obj.reviews.all() if r.decision == AccessReview.Decision.APPROVE),
            "can_decide": can_review and pending and obj.requester_id != user.pk and not reviewed,
            "own": obj.requester_id == user.pk,
            "can_revoke": can_review and obj.status == Status.APPROVED and obj.ends_at > timezone.now(),
            "can_cancel": obj.requester_id == user.pk and obj.status in services.OPEN_STATES,
            "form": DecisionForm(),
            "history": history,
            "now": timezone.now(),
        },
    )


def _decide(request, pk: int, perm: str, service, success: str, actor_kw: str = "reviewer"):
    obj = get_team_object(request, _requests(request), perm=perm, pk=pk)
    form = DecisionForm(request.POST)
    form.is_valid()
    try:
        service(access_request=obj, reason=form.cleaned_data.get("reason", ""), **{actor_kw: request.user})
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, success.format(pk=obj.pk))
    return redirect("governance:access-detail", pk=obj.pk)


@team_view
@require_POST
def access_approve(request, pk: int):
    return _decide(
        request, pk, REVIEW_ACCESS, services.access_request_approve, "Request #{pk}: approval recorded."
    )


@team_view
@require_POST
def access_deny(request, pk: int):
    return _decide(request, pk, REVIEW_ACCESS, services.access_request_deny, "Request #{pk} denied.")


@team_view
@require_POST
def access_revoke(request, pk: int):
    return _decide(
        request,
        pk,
        REVIEW_ACCESS,
        services.access_request_revoke,
        "Grant #{pk} revoked; gateways refuse it from now on.",
    )


@team_view
@require_POST
def access_cancel(request, pk: int):
    return _decide(
        request,
        pk,
        REQUEST_ACCESS,
        services.access_request_cancel,
        "Request #{pk} cancelled.",
        actor_kw="requester",
    )
