"""The pages that reach across apps, which is why they live above them all: the dashboard (reads
every app) and the site admin's teams (creating a team bootstraps its policy in governance)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render

from governance.models import AgentRole, Environment, McpServer
from governance.services.teams import team_create_with_admin
from portal import services
from portal.forms import TeamCreateForm
from portal.models import ChangeRecord, Team
from portal.pages import apply_service_errors


def dashboard_summary(*, team: Team) -> dict:
    return {
        "servers": McpServer.objects.for_team(team).count(),
        "roles": AgentRole.objects.for_team(team).count(),
        "environments": Environment.objects.for_team(team).count(),
        "recent_changes": ChangeRecord.objects.filter(team=team).select_related("actor")[:10],
    }


@login_required
def dashboard(request):
    if not request.team:  # a lazy object: test its truth, not its identity
        return render(request, "portal/no_team.html")
    return render(request, "portal/dashboard.html", {"summary": dashboard_summary(team=request.team)})


# --- site admin: teams ---------------------------------------------------------------------------


def is_site_admin(user) -> bool:
    """Superusers, and staff holding portal.add_team (granted in the Django admin)."""
    return user.is_active and (user.is_superuser or (user.is_staff and user.has_perm("portal.add_team")))


@login_required
def site_teams(request):
    if not is_site_admin(request.user):
        raise PermissionDenied("Only site admins create teams.")
    form = TeamCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            team, token = team_create_with_admin(**form.cleaned_data, actor=request.user)
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"Team {team.name} created.")
            link = services.invitation_url(token, request=request) if token else ""
            if token:
                messages.info(request, f"Admin invitation for {form.cleaned_data['admin']}: {link}")
            return redirect("site-teams")
    teams = Team.objects.order_by("name").prefetch_related("memberships__user")
    return render(request, "portal/site_teams.html", {"teams": teams, "form": form})
