"""Enforcement clients (gateways): list with what they run, register (token shown once), revoke."""

from __future__ import annotations

import json
import shlex
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from governance import selectors
from governance.forms.clients import ClientForm
from governance.models import EnforcementClient
from governance.services.clients import client_create, client_revoke
from portal.pages import get_team_object, require_perm, secret_page, submit, team_view
from portal.permissions import MANAGE_CLIENTS


def _register(*, name, environment, roles, expires_days, team, actor):
    expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
    return client_create(
        team=team, environment=environment, name=name, actor=actor, expires_at=expires_at, roles=list(roles)
    )


TOKEN_FILE, KEYS_FILE = ".mcpgov-token", "mcpgov-keys.json"


def gateway_setup(request, *, client: EnforcementClient, token: str) -> dict:
    """What the "client registered" page offers to paste: the token and keys saved to files, the
    agent's `.mcp.json` and the same gateway as a command line (the token never in an argument)."""
    portal = (settings.MCPGOV_PORTAL_URL or request.build_absolute_uri("/")).rstrip("/")
    role, other_roles = selectors.client_suggested_role(client=client)
    command = settings.MCPGOV_GATEWAY_COMMAND
    args = [
        "gateway",
        "--portal",
        portal,
        "--token-file",
        TOKEN_FILE,
        "--keys",
        KEYS_FILE,
        "--env",
        client.environment.name,
        "--role",
        role.name if role else "ROLE",
        "--read-only",
    ]
    keys_url = f"{portal}/api/v1/keys/?team={client.team.slug}"
    return {
        "save": (
            f"(umask 077 && printf '%s\\n' {shlex.quote(token)} > {TOKEN_FILE})\n"
            f"curl -fsS {shlex.quote(keys_url)} -o {KEYS_FILE}"
        ),
        "mcp_json": json.dumps({"mcpServers": {"governed": {"command": command, "args": args}}}, indent=2),
        "command_line": shlex.join([command, *args]),
        "role": role,
        "other_roles": other_roles,
        "keys_url": keys_url,
    }


@team_view
def client_list(request):
    require_perm(request, MANAGE_CLIENTS)
    rows = selectors.client_rows(user=request.user, team=request.team)
    return render(request, "governance/clients/list.html", {"rows": rows})


@team_view
def client_create_view(request):
    require_perm(request, MANAGE_CLIENTS)
    form = ClientForm(request.POST or None, team=request.team)
    if request.method == "POST":
        ok, issued = submit(form, _register, team=request.team, actor=request.user)
        if ok:
            setup = gateway_setup(request, client=issued.client, token=issued.token)
            return secret_page(
                request,
                "governance/clients/created.html",
                {"client": issued.client, "token": issued.token, "setup": setup},
            )
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
