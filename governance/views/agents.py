"""Agents: the identities that call tools (list, register with the OAuth secret shown once, edit, revoke,
static API keys). Every member reads; changing needs manage_clients (team admins)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from governance import selectors
from governance.forms.agents import AgentEditForm, AgentForm
from governance.models import AgentApiKey
from governance.services import agents as services
from portal.pages import form_page, get_team_object, require_perm, secret_page, submit, team_view
from portal.permissions import MANAGE_CLIENTS


def _agent(request, pk: int, *, perm: str | None = None):
    return get_team_object(
        request, selectors.agents_for_team(user=request.user, team=request.team), perm=perm, pk=pk
    )


def _endpoints(request) -> dict:
    return {
        "token_url": request.build_absolute_uri(reverse("oauth2_provider:token")),
        "authorize_url": request.build_absolute_uri(reverse("oauth2_provider:authorize")),
        "metadata_url": request.build_absolute_uri("/.well-known/oauth-authorization-server"),
    }


@team_view
def agent_list(request):
    agents = selectors.agents_for_team(user=request.user, team=request.team)
    return render(request, "governance/agents/list.html", {"agents": agents})


@team_view
def agent_detail(request, pk: int):
    agent = _agent(request, pk)
    return render(
        request,
        "governance/agents/detail.html",
        {"agent": agent, **_endpoints(request)},
    )


@team_view
def agent_create(request):
    require_perm(request, MANAGE_CLIENTS)
    form = AgentForm(request.POST or None, team=request.team)
    if request.method == "POST":
        ok, issued = submit(form, services.agent_create, team=request.team, actor=request.user)
        if ok:
            context = {"agent": issued.agent, "issued": issued, **_endpoints(request)}
            return secret_page(request, "governance/agents/created.html", context)
    return render(request, "governance/agents/form.html", {"form": form})


@team_view
def agent_edit(request, pk: int):
    agent = _agent(request, pk, perm=MANAGE_CLIENTS)
    if agent.is_revoked:
        messages.error(request, f"Agent {agent.slug} is revoked: register a new one instead.")
        return redirect("governance:agent-detail", pk=agent.pk)
    return form_page(
        request,
        form=AgentEditForm(request.POST or None, agent=agent),
        service=services.agent_update,
        agent=agent,
        actor=request.user,
        template="governance/agents/form.html",
        context={"agent": agent},
        success_message=f"Agent {agent.slug} saved; the bundles were republished.",
        success_url=reverse("governance:agent-detail", args=[agent.pk]),
    )


@team_view
@require_POST
def agent_revoke(request, pk: int):
    agent = _agent(request, pk, perm=MANAGE_CLIENTS)
    services.agent_revoke(agent=agent, actor=request.user)
    messages.success(
        request, f"Agent {agent.slug} revoked: its tokens and keys stop working on every gateway."
    )
    return redirect("governance:agent-detail", pk=agent.pk)


@team_view
@require_POST
def agent_api_key_create(request, pk: int):
    agent = _agent(request, pk, perm=MANAGE_CLIENTS)
    try:
        issued = services.agent_api_key_create(agent=agent, actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("governance:agent-detail", pk=agent.pk)
    return secret_page(request, "governance/agents/key_created.html", {"agent": agent, "issued": issued})


@team_view
@require_POST
def agent_api_key_revoke(request, pk: int, key_pk: int):
    agent = _agent(request, pk)
    key = get_team_object(
        request,
        AgentApiKey.objects.restrict(request.user).filter(agent=agent),
        perm=MANAGE_CLIENTS,
        pk=key_pk,
    )
    services.agent_api_key_revoke(api_key=key, actor=request.user)
    messages.success(request, f"API key {key.prefix} of {agent.slug} revoked.")
    return redirect("governance:agent-detail", pk=agent.pk)
