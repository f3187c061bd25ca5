"""Rate limits (global and per server) and kill-switch trigger settings."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from governance import selectors
from governance.forms.limits import GlobalLimitsForm, ServerLimitsForm, TriggerSettingsForm
from governance.services import limits as services
from portal.pages import delete_page, form_page, get_team_object, require_perm, submit, team_view
from portal.permissions import CHANGE_POLICY


@team_view
def limits(request):
    return render(request, "governance/limits/overview.html", _overview_context(request))


@team_view
@require_POST
def global_limits_edit(request):
    require_perm(request, CHANGE_POLICY)
    form = GlobalLimitsForm(request.POST)
    ok, _ = submit(form, services.global_limits_set, team=request.team, actor=request.user)
    if ok:
        messages.success(request, "Global rate limits saved.")
        return redirect("governance:limits")
    return render(request, "governance/limits/overview.html", _overview_context(request, global_form=form))


@team_view
@require_POST
def trigger_settings_edit(request):
    require_perm(request, CHANGE_POLICY)
    form = TriggerSettingsForm(request.POST)
    ok, _ = submit(form, services.trigger_settings_set, team=request.team, actor=request.user)
    if ok:
        messages.success(request, "Kill-switch trigger settings saved.")
        return redirect("governance:limits")
    return render(request, "governance/limits/overview.html", _overview_context(request, trigger_form=form))


def _server_limits(request, pk: int):
    return get_team_object(
        request,
        selectors.server_limits_for_team(user=request.user, team=request.team),
        perm=CHANGE_POLICY,
        pk=pk,
    )


@team_view
def server_limits_create(request):
    require_perm(request, CHANGE_POLICY)
    overview = selectors.limits_overview(user=request.user, team=request.team)
    return form_page(
        request,
        form=ServerLimitsForm(request.POST or None, servers=overview.servers_without_limits),
        service=services.server_limits_set,
        team=request.team,
        actor=request.user,
        template="governance/limits/server_form.html",
        success_message=lambda limit: f"Rate limits for {limit.server.slug} added.",
        success_url=reverse("governance:limits"),
    )


@team_view
def server_limits_edit(request, pk: int):
    limit = _server_limits(request, pk)
    return form_page(
        request,
        form=ServerLimitsForm(request.POST or None, instance=limit),
        service=services.server_limits_set,
        team=request.team,
        server=limit.server,
        actor=request.user,
        template="governance/limits/server_form.html",
        context={"limit": limit},
        success_message=f"Rate limits for {limit.server.slug} saved.",
        success_url=reverse("governance:limits"),
    )


@team_view
def server_limits_delete(request, pk: int):
    limit = _server_limits(request, pk)
    return delete_page(
        request,
        limit,
        delete=lambda: services.server_limits_delete(limits=limit, actor=request.user),
        kind="server rate limits",
        success_message=f"Rate limits for {limit.server.slug} removed; only the global limits apply to it now.",
        success_url=reverse("governance:limits"),
        cancel_url=reverse("governance:limits"),
        consequences="Only the global limits will apply to this server.",
    )


def _overview_context(request, global_form=None, trigger_form=None) -> dict:
    overview = selectors.limits_overview(user=request.user, team=request.team)
    return {
        "overview": overview,
        "global_form": global_form or GlobalLimitsForm(instance=overview.global_limits),
        "trigger_form": trigger_form or TriggerSettingsForm(instance=overview.triggers),
    }
