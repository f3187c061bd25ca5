"""The shadow page: the team's shadow bundle (a draft decided beside the live bundle by every gateway,
never enforced) and the recorded calls where the shadow's verdict differs from the live one; from here
the admin promotes the draft (publishes it) or drops the shadow (governance/views/drafts.py)."""

from __future__ import annotations

from django.db.models import Q
from django.shortcuts import render

from audit.choices import CallStatus, Phase
from audit.models import AuditEvent
from governance.models import ShadowBundle
from portal.pages import team_view

MAX_LISTED = 200


def shadow_differences(*, team, since):
    """RESULT events of the team since `since` whose shadow verdict is not the live outcome
    (refused live but not by the shadow, or the other way round), newest first."""
    blocked = Q(status=CallStatus.BLOCKED)
    shadow_refused = Q(shadow__decision="refuse")
    return (
        AuditEvent.objects.filter(session__team=team, phase=Phase.RESULT, ts__gte=since, shadow__isnull=False)
        .filter((blocked & ~shadow_refused) | (~blocked & shadow_refused))
        .select_related("session__environment")
        .order_by("-ts", "-seq")
    )


@team_view
def shadow_detail(request):
    shadows = list(
        ShadowBundle.objects.restrict(request.user)
        .filter(team=request.team)
        .select_related("environment", "draft", "created_by")
        .order_by("environment__order", "environment__name")
    )
    differences, evaluated, stale = [], 0, False
    if shadows:
        # a hint, not a proof: the draft gained or lost changes since it was shadowed
        stale = shadows[0].draft.changes.count() != shadows[0].draft_changes
        since = min(s.issued_at for s in shadows)
        differences = list(shadow_differences(team=request.team, since=since)[:MAX_LISTED])
        evaluated = AuditEvent.objects.filter(
            session__team=request.team, phase=Phase.RESULT, ts__gte=since, shadow__isnull=False
        ).count()
    return render(
        request,
        "audit/shadow.html",
        {
            "shadows": shadows,
            "draft": shadows[0].draft if shadows else None,
            "differences": differences,
            "evaluated": evaluated,
            "stale": stale,
        },
    )
