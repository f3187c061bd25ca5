"""Enforcement clients (gateways): list with what they run, register (token shown once), revoke."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from governance.models import EnforcementClient, Environment
from governance.services.bundles import latest_versions
from governance.services.clients import client_create, client_revoke
from portal.pages import get_team_object, require_perm, submit, team_view
from portal.permissions import MANAGE_CLIENTS


class ClientForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="Which gateway this is, e.g. ci-runner-eu-1.")
    environment = forms.ModelChoiceField(
        queryset=Environment.objects.none(), help_text="The token reaches only this environment's bundle."
    )
    expires_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=3650,
        label="Expires after (days)",
        help_text="Leave empty for a token that does not expire.",
    )

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["environment"].queryset = Environment.objects.for_team(team)


def _register(*, name, environment, expires_days, team, actor):
    expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
    return client_create(team=team, environment=environment, name=name, actor=actor, expires_at=expires_at)


@team_view
def client_list(request):
    require_perm(request, MANAGE_CLIENTS)
    clients = list(
        EnforcementClient.objects.restrict(request.user, MANAGE_CLIENTS)
        .for_team(request.team)
        .select_related("environment", "created_by")
    )
    latest = latest_versions(list({c.environment_id for c in clients}))
    now = timezone.now()
    rows = []
    for c in clients:
        if c.revoked_at is not None:
            state = "revoked"
        elif c.expires_at is not None and c.expires_at <= now:
            state = "expired"
        else:
            state = "active"
        rows.append(
            {
                "client": c,
                "state": state,
                "latest": latest.get(c.environment_id),
                "behind": bool(c.bundle_version) and latest.get(c.environment_id, 0) > c.bundle_version,
            }
        )
    return render(request, "governance/clients/list.html", {"rows": rows})


@team_view
def client_create_view(request):
    require_perm(request, MANAGE_CLIENTS)
    form = ClientForm(request.POST or None, team=request.team)
    if request.method == "POST":
        ok, issued = submit(form, _register, team=request.team, actor=request.user)
        if ok:
            # Rendered, not redirected: the token exists only in this response.
            response = render(
                request, "governance/clients/created.html", {"client": issued.client, "token": issued.token}
            )
            response["Cache-Control"] = "no-store"
            return response
    return render(request, "governance/clients/form.html", {"form": form})


@team_view
@require_POST
def client_revoke_view(request, pk: int):
    client = get_team_object(
        request,
        EnforcementClient.objects.restrict(request.user).for_team(request.team),
        perm=MANAGE_CLIENTS,
        pk=pk,
    )
    client_revoke(client=client, actor=request.user)
    messages.success(request, f"Client {client.name} revoked: its token no longer reaches the portal.")
    return redirect("governance:client-list")
