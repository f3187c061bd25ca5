"""Import (dry-run preview, then apply) and export of the team's policy in the seed's YAML shape."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render

from governance.forms.policy_io import PolicyImportForm
from governance.services import policy_yaml
from portal.pages import apply_service_errors, require_perm, team_view
from portal.permissions import CHANGE_POLICY


@team_view
def policy_import(request):
    """GET: the form. POST "preview": a dry run and its report. POST "apply": the import itself."""
    form = PolicyImportForm()
    if request.method == "POST":
        require_perm(request, CHANGE_POLICY)
        form = PolicyImportForm(request.POST, request.FILES)
        if form.is_valid():
            text = form.cleaned_data["text"]
            apply = request.POST.get("action") == "apply"
            try:
                report = policy_yaml.policy_import(
                    team=request.team, text=text, actor=request.user, dry_run=not apply
                )
            except ValidationError as exc:  # PolicyImportError names the line of each problem
                apply_service_errors(form, exc)
            else:
                if apply:
                    totals = ", ".join(f"{report.count(a)} {a}" for a in ("added", "changed", "removed"))
                    messages.success(
                        request,
                        f"Policy imported ({', '.join(report.blocks)}): {totals}."
                        if report.changed
                        else "Policy imported: it already matched, nothing changed.",
                    )
                    return redirect("governance:history")
                return render(
                    request,
                    "governance/policy/import.html",
                    {
                        "form": PolicyImportForm(initial={"text": text}),
                        "report": report,
                        "text": text,
                    },
                )
    return render(request, "governance/policy/import.html", {"form": form})


@team_view
def policy_export(request):
    """The team's policy as a YAML download."""
    response = HttpResponse(
        policy_yaml.policy_export(team=request.team), content_type="application/yaml; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{request.team.slug}-policy.yaml"'
    return response
