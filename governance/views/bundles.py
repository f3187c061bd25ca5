"""Signed policy bundles: versions per environment, one version as its effective policy (with the
gateways running it and its raw JSON), the effective policy of an environment now, a diff of two,
rebuild now."""

from __future__ import annotations

import json

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from governance import selectors
from governance.effective import BundleNotVerified, bundle_enforced, effective_policy
from governance.models import EnforcementClient
from governance.services.bundles import bundle_diff, bundle_versions, team_bundles_rebuild
from portal.pages import get_team_object, require_perm, team_view
from portal.permissions import CHANGE_POLICY


def _bundles(request):
    return selectors.bundles_for_team(user=request.user, team=request.team)


@team_view
def bundle_list(request):
    environments = list(selectors.environments_for_team(user=request.user, team=request.team))
    selected = next((e for e in environments if str(e.pk) == request.GET.get("environment")), None)
    selected = selected or (environments[0] if environments else None)
    versions = bundle_versions(environment=selected) if selected else []
    return render(
        request,
        "governance/bundles/list.html",
        {
            "environments": environments,
            "environment": selected,
            "versions": versions,
        },
    )


def _effective_context(request, bundle) -> dict:
    """The effective policy of the role picked with ?role= (default: the first) under `bundle`."""
    try:
        enforced = bundle_enforced(bundle)
    except BundleNotVerified as exc:
        return {"not_verified": str(exc), "roles": []}
    roles = sorted(enforced.roles)
    if not roles:
        return {"roles": []}
    role = request.GET.get("role") or roles[0]
    if role not in roles:
        raise Http404("The bundle has no such role.")
    return {"roles": roles, "role": role, "effective": effective_policy(enforced, role)}


def _running(request, bundle):
    """The team's enforcement clients whose gateways last reported running this version."""
    return (
        EnforcementClient.objects.for_team(request.team)
        .filter(environment_id=bundle.environment_id, bundle_version=bundle.version)
        .order_by("name")
    )


@team_view
def bundle_detail(request, pk: int):
    bundle = get_team_object(request, _bundles(request).select_related("environment", "created_by"), pk=pk)
    return render(
        request,
        "governance/bundles/detail.html",
        {"bundle": bundle, "gateways": _running(request, bundle), **_effective_context(request, bundle)},
    )


@team_view
def bundle_raw(request, pk: int):
    """The bundle's content as JSON, for reading or saving (the signed payload is served by the API)."""
    bundle = get_team_object(request, _bundles(request), pk=pk)
    text = json.dumps(bundle.content, indent=2, sort_keys=True, ensure_ascii=False)
    return HttpResponse(text + "\n", content_type="application/json; charset=utf-8")


@team_view
def effective_policy_view(request):
    """The effective policy of a role in an environment now: its latest bundle, read as gateways read it."""
    environments = list(
        selectors.environments_for_team(user=request.user, team=request.team).order_by("order")
    )
    wanted = request.GET.get("environment")
    environment = next((e for e in environments if str(e.pk) == wanted), None)
    if wanted and environment is None:
        raise Http404("No such environment in this team.")
    environment = environment or (environments[0] if environments else None)
    bundle = (
        _bundles(request)
        .filter(environment=environment)
        .select_related("environment")
        .order_by("-version")
        .first()
        if environment
        else None
    )
    context = {"environments": environments, "environment": environment, "bundle": bundle, "roles": []}
    if bundle is not None:
        context |= {"gateways": _running(request, bundle), **_effective_context(request, bundle)}
    return render(request, "governance/bundles/effective.html", context)


@team_view
def bundle_diff_view(request):
    try:
        a_pk, b_pk = int(request.GET.get("a", "")), int(request.GET.get("b", ""))
    except ValueError:
        raise Http404("Pick two versions to compare.") from None
    found = {b.pk: b for b in _bundles(request).select_related("environment").filter(pk__in=[a_pk, b_pk])}
    if a_pk not in found or b_pk not in found:
        raise Http404("No such bundle version.")
    old, new = sorted([found[a_pk], found[b_pk]], key=lambda b: (b.environment_id, b.version))
    entries = [
        {
            "kind": e.kind,
            "path": e.path,
            "old": json.dumps(e.old, sort_keys=True, ensure_ascii=False) if e.kind != "added" else "",
            "new": json.dumps(e.new, sort_keys=True, ensure_ascii=False) if e.kind != "removed" else "",
        }
        for e in bundle_diff(old.content, new.content)
    ]
    return render(request, "governance/bundles/diff.html", {"old": old, "new": new, "entries": entries})


@team_view
@require_POST
def bundle_rebuild(request):
    require_perm(request, CHANGE_POLICY)
    results = team_bundles_rebuild(
        team_id=request.team.pk, reason=f"rebuilt by {request.user.get_username()}", actor=request.user
    )
    made = [f"{r.bundle.environment.name} v{r.bundle.version}" for r in results if r.created]
    messages.success(request, f"New bundles: {', '.join(made)}." if made else "Every bundle is up to date.")
    return redirect("governance:bundle-list")
