"""Incidents: list, open, and the detail page with the timeline and the workflow's actions."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Prefetch
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from governance.forms import apply_service_errors
from governance.views.base import get_team_object, require_perm, submit, team_view
from incidents import services
from incidents.choices import IncidentStatus
from incidents.forms import (
    IncidentForm,
    IncidentServersForm,
    NoteForm,
    ResolveForm,
    RootCauseForm,
    SessionLinkForm,
)
from incidents.models import Incident, IncidentEntry
from portal.permissions import MANAGE_INCIDENTS, VIEW, has_team_perm


def _incidents(request):
    return (
        Incident.objects.restrict(request.user, VIEW)
        .for_team(request.team)
        .select_related("opened_by")
        .prefetch_related("affected_servers")
    )


@team_view
def incident_list(request):
    status = request.GET.get("status", "")
    incidents = _incidents(request).annotate(entries=Count("timeline"))
    if status in IncidentStatus.values:
        incidents = incidents.filter(status=status)
    return render(request, "incidents/list.html", {
        "incidents": incidents.order_by("-opened_at")[:200],
        "status": status,
        "statuses": IncidentStatus.choices,
        "can_manage": has_team_perm(request.user, MANAGE_INCIDENTS, request.team),
    })  # fmt: skip


@team_view
def incident_create(request):
    require_perm(request, MANAGE_INCIDENTS)
    form = IncidentForm(request.POST or None, team=request.team)
    if request.method == "POST":
        ok, incident = submit(form, services.incident_open, team=request.team, actor=request.user)
        if ok:
            messages.success(
                request, f"Incident #{incident.pk} opened; the team's responders have been emailed."
            )
            return redirect("incidents:incident-detail", pk=incident.pk)
    return render(request, "incidents/form.html", {"form": form})


def _detail_context(request, incident, **forms):
    candidates = services.contained_flag_states(incident)
    context = {
        "incident": incident,
        "timeline": incident.timeline.select_related("actor"),
        "can_manage": has_team_perm(request.user, MANAGE_INCIDENTS, request.team)
        and incident.status != IncidentStatus.RESOLVED,
        "candidates": candidates,
        "session_form": SessionLinkForm(),
        "root_cause_form": RootCauseForm(initial={"root_cause": incident.root_cause}),
        "note_form": NoteForm(),
        "servers_form": IncidentServersForm(team=request.team, exclude=list(incident.affected_servers.all())),
        "resolve_form": ResolveForm(candidates=candidates, halted=services.sessions_halted_by(candidates)),
    }
    context.update(forms)
    return context


@team_view
def incident_detail(request, pk: int):
    incident = get_team_object(
        request,
        _incidents(request).prefetch_related(
            Prefetch("timeline", queryset=IncidentEntry.objects.select_related("actor"))
        ),
        pk=pk,
    )
    return render(request, "incidents/detail.html", _detail_context(request, incident))


def _action(request, pk: int, form_name: str, form, service, success: str, **kwargs):
    """Run one workflow step; on a service error, re-render the page with the errors on that form."""
    incident = get_team_object(request, _incidents(request), perm=MANAGE_INCIDENTS, pk=pk)
    if form is None or form.is_valid():
        data = form.cleaned_data if form is not None else {}
        try:
            service(incident=incident, actor=request.user, **data, **kwargs)
        except ValidationError as exc:
            if form is None:
                messages.error(request, " ".join(exc.messages))
            else:
                apply_service_errors(form, exc)
                return render(
                    request, "incidents/detail.html",
                    _detail_context(request, incident, **{form_name: form}), status=400,
                )  # fmt: skip
        else:
            messages.success(request, success)
            return redirect("incidents:incident-detail", pk=incident.pk)
    else:
        return render(
            request, "incidents/detail.html", _detail_context(request, incident, **{form_name: form}),
            status=400,
        )  # fmt: skip
    return redirect("incidents:incident-detail", pk=incident.pk)


@team_view
@require_POST
def incident_contain(request, pk: int):
    return _action(request, pk, "", None, services.incident_contain,
                   "Contained: the affected servers' flags are off in every environment.")  # fmt: skip


@team_view
@require_POST
def incident_add_servers(request, pk: int):
    form = IncidentServersForm(request.POST, team=request.team)
    return _action(
        request, pk, "servers_form", form, services.incident_add_servers, "Affected servers added."
    )


@team_view
@require_POST
def incident_link_session(request, pk: int):
    return _action(request, pk, "session_form", SessionLinkForm(request.POST), services.incident_link_session,
                   "Session linked.")  # fmt: skip


@team_view
@require_POST
def incident_root_cause(request, pk: int):
    return _action(request, pk, "root_cause_form", RootCauseForm(request.POST),
                   services.incident_record_root_cause, "Root cause recorded.")  # fmt: skip


@team_view
@require_POST
def incident_note(request, pk: int):
    return _action(
        request, pk, "note_form", NoteForm(request.POST), services.incident_add_note, "Note added."
    )


@team_view
@require_POST
def incident_resolve(request, pk: int):
    incident = get_team_object(request, _incidents(request), perm=MANAGE_INCIDENTS, pk=pk)
    candidates = services.contained_flag_states(incident)
    form = ResolveForm(request.POST, candidates=candidates, halted=services.sessions_halted_by(candidates))
    return _action(request, pk, "resolve_form", form, services.incident_resolve, "Incident resolved.")
