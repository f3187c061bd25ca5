"""The kill-switch panel: every flag in every environment, one-click disable with a reason, enable again."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from audit.services.sessions import flag_enable_and_resume, halted_counts_by_flag
from governance.forms_access import FlagConstraintsForm, FlagDisableForm, FlagEnableForm, FlagForm
from governance.models import EnforcementClient, Environment, Flag, FlagState
from governance.services import flags as services
from governance.services.notifications import stale_after_minutes
from governance.views.base import get_team_object, require_perm, submit, team_view
from portal.models import ChangeRecord
from portal.permissions import CHANGE_POLICY, RELEASE_SESSION, TOGGLE_FLAGS, VIEW, has_team_perm


def _flags(request):
    return Flag.objects.restrict(request.user, VIEW).for_team(request.team).select_related("server")


def _environments(request):
    return Environment.objects.restrict(request.user, VIEW).for_team(request.team).order_by("order", "name")


def stale_after() -> timedelta:
    return timedelta(minutes=stale_after_minutes())


def gateway_rows(team, now=None):
    """The team's active enforcement clients with whether each is stale (not seen for a while)."""
    now = now or timezone.now()
    limit = now - stale_after()
    clients = (
        EnforcementClient.objects.for_team(team).filter(revoked_at__isnull=True).select_related("environment")
    )
    rows = []
    for c in clients:
        if c.expires_at is not None and c.expires_at <= now:
            continue
        # Never connected is "not deployed yet", not stale (as in the stale-gateway emails).
        rows.append({"client": c, "stale": c.last_seen_at is not None and c.last_seen_at < limit})
    return rows


@team_view
def flag_panel(request):
    environments = list(_environments(request))
    flags = list(_flags(request).order_by("name"))
    states = {
        (s.flag_id, s.environment_id): s
        for s in FlagState.objects.filter(flag__in=flags).select_related("changed_by")
    }
    halted = halted_counts_by_flag(team=request.team)
    rows = [
        {
            "flag": flag,
            "cells": [
                {
                    "env": env,
                    "state": states.get((flag.pk, env.pk)),
                    "halted": halted.get((flag.name, env.pk), 0),
                }
                for env in environments
            ],
        }
        for flag in flags
    ]
    can_toggle = has_team_perm(request.user, TOGGLE_FLAGS, request.team)
    can_edit = has_team_perm(request.user, CHANGE_POLICY, request.team)
    return render(request, "governance/flags/panel.html", {
        "environments": environments,
        "rows": rows,
        "can_toggle": can_toggle,
        "can_edit": can_edit,
        "can_release": has_team_perm(request.user, RELEASE_SESSION, request.team),
        "disable_form": FlagDisableForm(),
        "gateways": gateway_rows(request.team),
        "stale_minutes": int(stale_after().total_seconds() // 60),
    })  # fmt: skip


@team_view
def flag_create(request):
    require_perm(request, CHANGE_POLICY)
    form = FlagForm(request.POST or None, team=request.team)
    if request.method == "POST":
        ok, flag = submit(form, services.flag_create, team=request.team, actor=request.user)
        if ok:
            messages.success(request, f"Flag {flag.name} added; it is on in every environment.")
            return redirect("governance:flag-list")
    return render(request, "governance/flags/form.html", {"form": form})


@team_view
def flag_detail(request, pk: int):
    flag = get_team_object(request, _flags(request), pk=pk)
    environments = list(_environments(request))
    states = {s.environment_id: s for s in flag.states.select_related("changed_by")}
    can_toggle = has_team_perm(request.user, TOGGLE_FLAGS, request.team)
    halted = halted_counts_by_flag(team=request.team)
    cells = [
        {"env": env, "state": states.get(env.pk), "halted": halted.get((flag.name, env.pk), 0),
         "form": FlagConstraintsForm.for_state(states.get(env.pk), prefix=f"env{env.pk}")}
        for env in environments
    ]  # fmt: skip
    history = ChangeRecord.objects.filter(
        team=request.team, summary__startswith=f"Flag {flag.name} "
    ).select_related("actor")[:50]
    return render(request, "governance/flags/detail.html", {
        "flag": flag, "cells": cells, "can_toggle": can_toggle,
        "can_edit": has_team_perm(request.user, CHANGE_POLICY, request.team), "history": history,
        "can_release": has_team_perm(request.user, RELEASE_SESSION, request.team),
    })  # fmt: skip


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
    resume = bool(form.cleaned_data.get("resume"))
    try:
        _, released = flag_enable_and_resume(
            flag=flag, environment=env, reason=form.cleaned_data.get("reason", ""), actor=request.user,
            resume=resume,
        )  # fmt: skip
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
                flag=flag, environment=env, enabled=form.cleaned_data["enabled"],
                constraints=form.cleaned_data["constraints"], reason=form.cleaned_data["reason"], actor=request.user,
            )  # fmt: skip
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
    if request.method == "POST":
        name = flag.name
        services.flag_delete(flag=flag, actor=request.user)
        messages.success(request, f"Flag {name} deleted.")
        return redirect("governance:flag-list")
    from django.urls import reverse

    return render(request, "governance/confirm_delete.html", {
        "object": flag, "kind": "flag", "cancel_url": reverse("governance:flag-detail", args=[flag.pk]),
        "consequences": "Gateways stop evaluating it; if it is off anywhere, those calls are allowed again.",
    })  # fmt: skip
