"""Environments, their forbidden patterns and server bindings."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from governance import selectors
from governance.forms.environments import BindingForm, EnvironmentForm
from governance.services import environments as services
from portal.pages import delete_page, form_page, get_team_object, require_perm, submit, team_view
from portal.permissions import CHANGE_POLICY


@team_view
def environment_list(request):
    environments = selectors.environment_list(user=request.user, team=request.team)
    return render(request, "governance/environments/list.html", {"environments": environments})


@team_view
def environment_detail(request, pk: int):
    environment = get_team_object(
        request, selectors.environments_for_team(user=request.user, team=request.team), pk=pk
    )
    return render(request, "governance/environments/detail.html", _detail_context(request, environment))


def _environment(request, pk: int):
    return get_team_object(
        request,
        selectors.environments_for_team(user=request.user, team=request.team),
        perm=CHANGE_POLICY,
        pk=pk,
    )


def _environment_url(environment) -> str:
    return reverse("governance:environment-detail", args=[environment.pk])


@team_view
def environment_create(request):
    require_perm(request, CHANGE_POLICY)
    return form_page(
        request,
        form=EnvironmentForm(request.POST or None),
        service=services.environment_create,
        team=request.team,
        actor=request.user,
        template="governance/environments/form.html",
        success_message=lambda environment: f"Environment {environment.name} added.",
        success_url=_environment_url,
    )


@team_view
def environment_edit(request, pk: int):
    environment = _environment(request, pk)
    return form_page(
        request,
        form=EnvironmentForm(request.POST or None, instance=environment),
        service=services.environment_update,
        environment=environment,
        actor=request.user,
        template="governance/environments/form.html",
        context={"environment": environment},
        success_message=f"Environment {environment.name} saved.",
        success_url=_environment_url(environment),
    )


@team_view
def environment_delete(request, pk: int):
    environment = _environment(request, pk)
    return delete_page(
        request,
        environment,
        delete=lambda: services.environment_delete(environment=environment, actor=request.user),
        kind="environment",
        success_message=f"Environment {environment.name} deleted.",
        success_url=reverse("governance:environment-list"),
        cancel_url=_environment_url(environment),
        consequences="Its server bindings are removed with it; gateways running in it will be refused every server.",
    )


@team_view
@require_POST
def binding_create(request, pk: int):
    environment = _environment(request, pk)
    form = BindingForm(request.POST, servers=_unbound_servers(request, environment))
    ok, binding = submit(form, services.binding_set, environment=environment, actor=request.user)
    if ok:
        messages.success(
            request,
            f"{binding.server.slug} bound in {environment.name} "
            f"({binding.get_permission_display().lower()}).",
        )
        return redirect("governance:environment-detail", pk=environment.pk)
    return render(
        request,
        "governance/environments/detail.html",
        _detail_context(request, environment, binding_form=form),
    )


@team_view
def binding_edit(request, pk: int):
    binding = get_team_object(
        request, selectors.bindings_for_team(user=request.user, team=request.team), perm=CHANGE_POLICY, pk=pk
    )
    form = BindingForm(request.POST or None, instance=binding)
    if request.method == "POST":
        ok, _ = submit(
            form,
            services.binding_set,
            environment=binding.environment,
            server=binding.server,
            actor=request.user,
        )
        if ok:
            messages.success(
                request, f"Binding of {binding.server.slug} in {binding.environment.name} saved."
            )
            return redirect("governance:environment-detail", pk=binding.environment_id)
    return render(request, "governance/environments/binding_form.html", {"form": form, "binding": binding})


@team_view
@require_POST
def binding_delete(request, pk: int):
    binding = get_team_object(
        request, selectors.bindings_for_team(user=request.user, team=request.team), perm=CHANGE_POLICY, pk=pk
    )
    environment, slug = binding.environment, binding.server.slug
    services.binding_delete(binding=binding, actor=request.user)
    messages.success(request, f"{slug} unbound from {environment.name}.")
    return redirect("governance:environment-detail", pk=environment.pk)


def _unbound_servers(request, environment):
    return selectors.servers_for_team(user=request.user, team=request.team).exclude(
        bindings__environment=environment
    )


def _detail_context(request, environment, binding_form: BindingForm | None = None) -> dict:
    return {
        "environment": environment,
        "bindings": selectors.environment_bindings(user=request.user, environment=environment),
        "binding_form": binding_form or BindingForm(servers=_unbound_servers(request, environment)),
    }
