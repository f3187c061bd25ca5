"""The web shell: dashboard and team switcher (login/logout are Django's auth views)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from portal.middleware import SESSION_KEY
from portal.permissions import teams_for_user
from portal.selectors import dashboard_summary


@login_required
def dashboard(request):
    team = request.team
    if team is None:
        return render(request, "portal/no_team.html")
    return render(request, "portal/dashboard.html", {"summary": dashboard_summary(team=team)})


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
