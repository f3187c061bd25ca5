"""The kill-switch panel: every flag in every environment, one-click disable with a reason, enable again."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from governance import selectors
from governance.forms.flags import FlagConstraintsForm, FlagDisableForm, FlagEnableForm, FlagForm
from governance.services import flags as services
from governance.services.notifications import stale_after_minutes
from portal.pages import delete_page, form_page, get_team_object, may, require_perm, team_view
from portal.permissions import CHANGE_POLICY, RELEASE_SESSION, TOGGLE_FLAGS


def _flags(request):
    return selectors.flags_for_team(user=request.user, team=request.team)


def _environments(request):
    return selectors.environments_in_order(user=request.user, team=request.team)


def stale_after() -> timedelta:
    return timedelta(minutes=stale_after_minutes())


@team_view
def flag_panel(request):
    panel = selectors.flag_panel(user=request.user, team=request.team)
    halted = services.flag_recovery.halted_counts(team=request.team)
    for row in panel.rows:
        for cell in row["cells"]:
            cell["halted"] = halted.get((row["flag"].name, cell["env"].pk), 0)
    can_toggle = may(request, TOGGLE_FLAGS)
    can_edit = may(request, CHANGE_POLICY)
    return render(
        request,
        "governance/flags/panel.html",
        {
            "environments": panel.environments,
            "rows": panel.rows,
            "can_toggle": can_toggle,
            "can_edit": can_edit,
            "can_release": may(request, RELEASE_SESSION),
            "disable_form": FlagDisableForm(),
            "gateways": selectors.gateway_rows(team=request.team, stale_after=stale_after()),
            "stale_minutes": int(stale_after().total_seconds() // 60),
        },
    )


@team_view
def flag_create(request):
    require_perm(request, CHANGE_POLICY)
    return form_page(
        request,
        form=FlagForm(request.POST or None, team=request.team),
        service=services.flag_create,
        team=request.team,
        actor=request.user,
        template="governance/flags/form.html",
        success_message=lambda flag: f"Flag {flag.name} added; it is on in every environment.",
        success_url=reverse("governance:flag-list"),
    )


@team_view
def flag_detail(request, pk: int):
    flag = get_team_object(request, _flags(request), pk=pk)
    environments = list(_environments(request))
    states = selectors.flag_states(flag=flag)
    can_toggle = may(request, TOGGLE_FLAGS)
    halted = services.flag_recovery.halted_counts(team=request.team)
    cells = [
        {
            "env": env,
            "state": states.get(env.pk),
            "halted": halted.get((flag.name, env.pk), 0),
            "form": FlagConstraintsForm.for_state(states.get(env.pk), prefix=f"env{env.pk}"),
        }
        for env in environments
    ]
    history = selectors.flag_history(team=request.team, flag=flag)
    return render(
        request,
        "governance/flags/detail.html",
        {
            "flag": flag,
            "cells": cells,
            "can_toggle": can_toggle,
            "can_edit": may(request, CHANGE_POLICY),
            "history": history,
            "can_release": may(request, RELEASE_SESSION),
        },
    )


def _flag_and_env(request, pk: int, env_pk: int):
    flag = get_team_object(request, _flags(request), perm=TOGGLE_FLAGS, pk=pk)
    env = get_object_or_404(_environments(request), pk=env_pk)
    return flag, env


def _back(request, flag):
    if request.POST.get("next") == "detail":
        return redirect("governance:flag-detail", pk=flag.pk)
    return redirect("governance:flag-list")


@team_view
@require_POST
def flag_disable(request, pk: int, env_pk: int | None = None):
    """Disable one flag in one environment (or, without `env_pk`, everywhere) with a reason."""
    if env_pk is None:
        flag = get_team_object(request, _flags(request), perm=TOGGLE_FLAGS, pk=pk)
        envs = list(_environments(request))
    else:
        flag, env = _flag_and_env(request, pk, env_pk)
        envs = [env]
    form = FlagDisableForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"{flag.name} not disabled: say why — every stopped agent sees the reason.")
        return _back(request, flag)
    switched = services.flag_disable(
        flag=flag, environments=envs, reason=form.cleaned_data["reason"], actor=request.user
    )
    where = ", ".join(s.environment.name for s in switched) or "nowhere new (already off)"
    messages.success(
        request, f"{flag.name} disabled in {where}. Gateways refuse its calls from their next call."
    )
    return _back(request, flag)


@team_view
@require_POST
def flag_enable(request, pk: int, env_pk: int):
    flag, env = _flag_and_env(request, pk, env_pk)
    form = FlagEnableForm(request.POST)
    form.is_valid()
    try:
        _, released = services.flag_recovery.enable_and_resume(
            flag=flag,
            environment=env,
            reason=form.cleaned_data.get("reason", ""),
            actor=request.user,
            resume=bool(form.cleaned_data.get("resume")),
        )
    except PermissionDenied:
        messages.error(
            request, f"{flag.name} not enabled: resuming sessions needs the release session permission."
        )
        return _back(request, flag)
    done = f"{flag.name} enabled in {env.name}."
    if released:
        done += f" {len(released)} session{'s' if len(released) != 1 else ''} it halted may continue."
    messages.success(request, done)
    return _back(request, flag)


@team_view
@require_POST
def flag_state_edit(request, pk: int, env_pk: int):
    """Set on/off and the role constraint of one flag in one environment."""
    flag, env = _flag_and_env(request, pk, env_pk)
    form = FlagConstraintsForm(request.POST, prefix=f"env{env.pk}")
    if form.is_valid():
        try:
            services.flag_set_state(
                flag=flag,
                environment=env,
                enabled=form.cleaned_data["enabled"],
                constraints=form.cleaned_data["constraints"],
                reason=form.cleaned_data["reason"],
                actor=request.user,
            )
        except ValidationError as exc:
            messages.error(request, f"{flag.name} in {env.name} not changed: {' '.join(exc.messages)}")
        else:
            messages.success(request, f"{flag.name} in {env.name} saved.")
    else:
        errors = " ".join(e for errs in form.errors.values() for e in errs)
        messages.error(request, f"{flag.name} in {env.name} not changed: {errors}")
    return redirect("governance:flag-detail", pk=flag.pk)


@team_view
def flag_delete(request, pk: int):
    flag = get_team_object(request, _flags(request), perm=CHANGE_POLICY, pk=pk)
    return delete_page(
        request,
        flag,
        delete=lambda: services.flag_delete(flag=flag, actor=request.user),
        kind="flag",
        success_message=f"Flag {flag.name} deleted.",
        success_url=reverse("governance:flag-list"),
        cancel_url=reverse("governance:flag-detail", args=[flag.pk]),
        consequences="Gateways stop evaluating it; if it is off anywhere, those calls are allowed again.",
    )
