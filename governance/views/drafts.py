"""The team's policy draft: its changes, the diff of the next bundles per environment, and the
approve / publish / discard steps (the services in governance/services/drafts.py)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from governance.models import PolicyDraft
from governance.services import drafts as services
from portal.pages import require_perm, team_view
from portal.permissions import CHANGE_POLICY


@team_view
def draft_detail(request):
    draft = services.draft_open(team=request.team)
    preview = services.draft_preview(draft=draft) if draft else None
    authors = set(draft.changes.exclude(author=None).values_list("author_id", flat=True)) if draft else set()
    recent = (
        PolicyDraft.objects.filter(team=request.team).exclude(status="open").select_related("closed_by")[:10]
    )
    return render(
        request,
        "governance/drafts/detail.html",
        {
            "draft": draft,
            "preview": preview,
            "changes": list(draft.changes.select_related("author")) if draft else [],
            "may_approve": draft is not None and request.user.pk not in authors,
            "recent": recent,
        },
    )


def _step(request, action, success: str):
    require_perm(request, CHANGE_POLICY)
    draft = services.draft_open(team=request.team)
    if draft is None:
        messages.error(request, "There is no open draft.")
        return redirect("governance:draft-detail")
    try:
        action(draft)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    except PermissionDenied as exc:  # the two-person rule: said on the page, not a bare 403
        messages.error(request, str(exc))
    else:
        messages.success(request, success)
    return redirect("governance:draft-detail")


@require_POST
@team_view
def draft_publish(request):
    return _step(request, lambda d: services.draft_publish(draft=d, actor=request.user), "Draft published.")


@require_POST
@team_view
def draft_approve(request):
    return _step(request, lambda d: services.draft_approve(draft=d, actor=request.user), "Draft approved.")


@require_POST
@team_view
def draft_discard(request):
    reason = request.POST.get("reason", "")
    return _step(
        request,
        lambda d: services.draft_discard(draft=d, actor=request.user, reason=reason),
        "Draft discarded.",
    )


@require_POST
@team_view
def draft_change_remove(request, position: int):
    return _step(
        request,
        lambda d: services.draft_change_remove(draft=d, position=position, actor=request.user),
        f"Change {position} taken out of the draft.",
    )


@require_POST
@team_view
def draft_shadow(request):
    return _step(
        request,
        lambda d: services.draft_shadow_publish(draft=d, actor=request.user),
        "Published as a shadow: gateways decide every call with it too and record what it would have done.",
    )


@require_POST
@team_view
def shadow_drop(request):
    require_perm(request, CHANGE_POLICY)
    try:
        services.shadow_drop(team=request.team, actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "Shadow dropped: gateways stop evaluating it.")
    return redirect("governance:draft-detail")
