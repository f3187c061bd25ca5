"""The pages that reach across apps, which is why they live above them all: the home (what needs
this person, from every app, live), the inbox, the team's webhook, the site admin's teams (creating
a team bootstraps its policy in governance)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from config.needs import nav_badges, needs_for, needs_token
from governance.models import AgentRole, Environment, McpServer
from governance.services.teams import team_create_with_admin
from governance.services.webhooks import team_webhook_set, webhook_shown
from portal import services
from portal.forms import TeamCreateForm
from portal.models import ChangeRecord, Notification, Team
from portal.pages import apply_service_errors, form_page, require_perm, team_view
from portal.permissions import MANAGE_MEMBERS


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


@team_view
def needs_poll(request):
    """The live part of every page: 204 while the page's `seen` token is current, else the nav
    badges and the home's counters as htmx out-of-band swaps (and the poller with the new token)."""
    context = needs_context(request)
    if request.GET.get("seen") == context["needs_token"]:
        return HttpResponse(status=204)
    return render(request, "portal/_needs_live.html", context)


def needs_context(request) -> dict:
    """Template context of the needs: the list, its token, the nav's badges (context processor too)."""
    from guardian.shortcuts import get_perms

    needs = needs_for(user=request.user, team=request.team, perms=set(get_perms(request.user, request.team)))
    badges = {name.replace(":", "_").replace("-", "_"): count for name, count in nav_badges(needs).items()}
    return {"needs": needs, "needs_token": needs_token(needs), "nav_badges": badges}


@team_view
def search_view(request):
    from config.search import search

    query = request.GET.get("q", "")[:200]
    return render(
        request, "portal/search.html", {"query": query, "hits": search(team=request.team, query=query)}
    )


# --- the inbox -----------------------------------------------------------------------------------


@team_view
def inbox(request):
    notices = Notification.objects.filter(team=request.team, user=request.user)
    page = Paginator(notices, 50).get_page(request.GET.get("page"))
    return render(request, "portal/inbox.html", {"page": page, "notices": page.object_list})


@team_view
@require_POST
def inbox_read(request):
    """Mark one notice (`pk`) or all read; opening a notice's link (`next`) marks it read too."""
    pk = request.POST.get("pk")
    pk = int(pk) if pk and pk.isdigit() else None
    services.notifications_mark_read(team=request.team, user=request.user, pk=pk)
    if pk is not None:
        notice = Notification.objects.filter(team=request.team, user=request.user, pk=pk).first()
        if notice is not None and notice.url.startswith("/") and not notice.url.startswith("//"):
            return redirect(notice.url)
    return redirect("inbox")


# --- the team's outgoing webhook -----------------------------------------------------------------


class WebhookForm(forms.Form):
    webhook_url = forms.URLField(
        required=False,
        max_length=500,
        label="Webhook URL",
        assume_scheme="https",
        help_text="An incoming-webhook URL (Slack, Mattermost, Teams workflows). Leave empty to keep the current one.",
    )
    clear = forms.BooleanField(required=False, label="Remove the webhook")


@team_view
def team_webhook(request):
    require_perm(request, MANAGE_MEMBERS)
    return form_page(
        request,
        form=WebhookForm(request.POST or None),
        service=team_webhook_set,
        template="portal/webhook.html",
        success_message="Webhook saved.",
        success_url=reverse("team-webhook"),
        context={"current": webhook_shown(request.team.webhook_url)},
        team=request.team,
        actor=request.user,
    )


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
