"""Import (dry-run preview, then apply) and export of the team's policy in the seed's YAML shape."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render

from governance.forms import PolicyImportForm, apply_service_errors
from governance.views.base import require_perm, team_view
from portal.permissions import CHANGE_POLICY


@team_view
def policy_import(request):
    from governance.services import policy_yaml  # TEMP until the module lands

    form = PolicyImportForm()
    if request.method == "POST":
        require_perm(request, CHANGE_POLICY)
        form = PolicyImportForm(request.POST, request.FILES)
        if form.is_valid():
            apply = request.POST.get("action") == "apply"
            try:
                report = policy_yaml.policy_import(
                    team=request.team, text=form.cleaned_data["text"], actor=request.user, dry_run=not apply
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                if apply:
                    messages.success(request, "Policy imported.")
                    return redirect("governance:history")
                return render(request, "governance/policy/import.html", {
                    "form": PolicyImportForm(initial={"text": form.cleaned_data["text"]}),
                    "report": report, "text": form.cleaned_data["text"],
                })
    return render(request, "governance/policy/import.html", {"form": form})


@team_view
def policy_export(request):
    from governance.services import policy_yaml  # TEMP until the module lands

    text = policy_yaml.policy_export(team=request.team)
    response = HttpResponse(text, content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{request.team.slug}-policy.yaml"'
    return response
