"""The web shell: team switcher and team members (login/logout are Django's auth views)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from governance.forms import MemberAddForm, MemberForm
from governance.views.base import get_team_object, require_perm, team_view
from portal import services
from portal.middleware import SESSION_KEY
from portal.models import Membership
from portal.permissions import MANAGE_MEMBERS, teams_for_user


@login_required
@require_POST
def team_switch(request):
    team = teams_for_user(request.user).filter(slug=request.POST.get("team", "")).first()
    if team is None:
        raise Http404("No such team.")
    request.session[SESSION_KEY] = team.pk
    messages.info(request, f"Now working in {team.name}.")
    next_url = request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = ""
    return redirect(next_url or "dashboard")


def _memberships(request):
    return Membership.objects.filter(team=request.team).select_related("user")


@team_view
def member_list(request):
    members = _memberships(request).order_by("user__username")
    return render(
        request,
        "portal/members.html",
        {
            "members": [(m, MemberForm(membership=m)) for m in members],
            "add_form": MemberAddForm(team=request.team),
        },
    )


@team_view
@require_POST
def member_add(request):
    require_perm(request, MANAGE_MEMBERS)
    form = MemberAddForm(request.POST, team=request.team)
    if not form.is_valid():
        members = _memberships(request).order_by("user__username")
        return render(
            request,
            "portal/members.html",
            {
                "members": [(m, MemberForm(membership=m)) for m in members],
                "add_form": form,
            },
        )
    data = form.cleaned_data
    services.membership_set(
        team=request.team,
        user=data["user"],
        role=data["role"],
        is_auditor=data["is_auditor"],
        actor=request.user,
    )
    messages.success(request, f"{data['username']} added as {data['role']}.")
    return redirect("members")


@team_view
@require_POST
def member_edit(request, pk: int):
    membership = get_team_object(request, _memberships(request), perm=MANAGE_MEMBERS, pk=pk)
    form = MemberForm(request.POST, membership=membership)
    if form.is_valid():
        services.membership_set(
            team=request.team,
            user=membership.user,
            role=form.cleaned_data["role"],
            is_auditor=form.cleaned_data["is_auditor"],
            actor=request.user,
        )
        messages.success(
            request,
            f"{membership.user.get_username()} is now {form.cleaned_data['role']}"
            f"{' (auditor)' if form.cleaned_data['is_auditor'] else ''}.",
        )
    else:
        messages.error(
            request,
            f"{membership.user.get_username()} not changed: "
            f"{' '.join(e for errors in form.errors.values() for e in errors)}",
        )
    return redirect("members")


@team_view
@require_POST
def member_remove(request, pk: int):
    membership = get_team_object(request, _memberships(request), perm=MANAGE_MEMBERS, pk=pk)
    username = membership.user.get_username()
    try:
        services.membership_remove(membership=membership, actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{username} removed from {request.team.name}.")
    return redirect("members")
