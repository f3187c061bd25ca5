"""Agent roles and their allowed and forbidden servers (default deny)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from governance import selectors
from governance.choices import RuleKind
from governance.forms.roles import RoleForm, RoleServerForm
from governance.services import roles as services
from portal.pages import delete_page, form_page, get_team_object, is_htmx, require_perm, submit, team_view
from portal.permissions import CHANGE_POLICY


@team_view
def role_list(request):
    roles = selectors.role_list(user=request.user, team=request.team)
    return render(request, "governance/roles/list.html", {"roles": roles})


@team_view
def role_detail(request, pk: int):
    role = get_team_object(request, selectors.roles_for_team(user=request.user, team=request.team), pk=pk)
    return render(request, "governance/roles/detail.html", _rules_context(request, role))


def _role(request, pk: int):
    return get_team_object(
        request, selectors.roles_for_team(user=request.user, team=request.team), perm=CHANGE_POLICY, pk=pk
    )


def _role_url(role) -> str:
    return reverse("governance:role-detail", args=[role.pk])


@team_view
def role_create(request):
    require_perm(request, CHANGE_POLICY)
    return form_page(
        request,
        form=RoleForm(request.POST or None),
        service=services.role_create,
        team=request.team,
        actor=request.user,
        template="governance/roles/form.html",
        success_message=lambda role: f"Role {role.name} added.",
        success_url=_role_url,
    )


@team_view
def role_edit(request, pk: int):
    role = _role(request, pk)
    return form_page(
        request,
        form=RoleForm(request.POST or None, instance=role),
        service=services.role_update,
        role=role,
        actor=request.user,
        template="governance/roles/form.html",
        context={"role": role},
        success_message=f"Role {role.name} saved.",
        success_url=_role_url(role),
    )


@team_view
def role_delete(request, pk: int):
    role = _role(request, pk)
    return delete_page(
        request,
        role,
        delete=lambda: services.role_delete(role=role, actor=request.user),
        kind="agent role",
        success_message=f"Role {role.name} deleted.",
        success_url=reverse("governance:role-list"),
        cancel_url=_role_url(role),
        consequences="Agents using this role will be refused every server.",
    )


@team_view
@require_POST
def role_server_add(request, pk: int):
    """Add a server to the role's allowed or forbidden list (htmx swaps the lists; plain POST redirects)."""
    role = _role(request, pk)
    if request.POST.get("kind") not in RuleKind.values:
        return HttpResponseBadRequest("Say which list: allowed or forbidden.")
    form = RoleServerForm(
        request.POST,
        servers=selectors.servers_for_team(user=request.user, team=request.team),
        auto_id=f"id_{request.POST.get('kind', '')}_%s",
    )
    ok, rule = submit(form, services.role_server_add, role=role, actor=request.user)
    if ok:
        messages.success(
            request, f"{rule.server.slug} is now {rule.get_kind_display().lower()} for {role.name}."
        )
        if not is_htmx(request):
            return redirect("governance:role-detail", pk=role.pk)
        form = None
    context = _rules_context(request, role, failed_form=form)
    if is_htmx(request):
        return render(request, "governance/roles/_rules.html", {**context, "oob_messages": True})
    return render(request, "governance/roles/detail.html", context)


@team_view
@require_POST
def role_server_remove(request, pk: int, rule_pk: int):
    role = get_team_object(request, selectors.roles_for_team(user=request.user, team=request.team), pk=pk)
    rule = get_team_object(
        request,
        selectors.rules_for_team(user=request.user, team=request.team).filter(role=role),
        perm=CHANGE_POLICY,
        pk=rule_pk,
    )
    slug, kind = rule.server.slug, rule.get_kind_display().lower()
    services.role_server_remove(rule=rule, actor=request.user)
    messages.success(request, f"{slug} removed from the {kind} servers of {role.name}.")
    if is_htmx(request):
        return render(
            request, "governance/roles/_rules.html", {**_rules_context(request, role), "oob_messages": True}
        )
    return redirect("governance:role-detail", pk=role.pk)


def _rules_context(request, role, failed_form: RoleServerForm | None = None) -> dict:
    rules = selectors.role_rules(user=request.user, role=role)
    addable = {RuleKind.ALLOWED: rules.addable_to_allowed, RuleKind.FORBIDDEN: rules.addable_to_forbidden}
    forms = {
        kind: RoleServerForm(servers=servers, initial={"kind": kind}, auto_id=f"id_{kind}_%s")
        for kind, servers in addable.items()
    }
    failed_kind = failed_form.data.get("kind") if failed_form is not None else None
    if failed_kind in forms:
        # Keep the user's choice and its error, but offer the same servers as a fresh form would.
        failed_form.fields["server"].queryset = addable[failed_kind]
        forms[failed_kind] = failed_form
    titles = {RuleKind.ALLOWED: "Allowed servers", RuleKind.FORBIDDEN: "Forbidden servers"}
    return {
        "role": role,
        "lists": [
            {
                "kind": kind,
                "title": title,
                "rules": rules.allowed if kind == RuleKind.ALLOWED else rules.forbidden,
                "form": forms[kind],
                # Servers on the other list stay choosable, marked, so the service can say why it refuses.
                "options": [(server, rules.kind_of.get(server.pk, "")) for server in addable[kind]],
            }
            for kind, title in titles.items()
        ],
    }
