"""Incidents: list, open, and the detail page with the timeline and the workflow's actions."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from incidents import selectors, services
from incidents.choices import IncidentStatus
from incidents.forms import (
    IncidentForm,
    IncidentServersForm,
    NoteForm,
    ResolveForm,
    RootCauseForm,
    SessionLinkForm,
)
from portal.pages import (
    apply_service_errors,
    form_page,
    get_team_object,
    may,
    require_perm,
    team_view,
)
from portal.permissions import MANAGE_INCIDENTS


def _incidents(request):
    return selectors.incidents_for_team(user=request.user, team=request.team)


@team_view
def incident_list(request):
    status = request.GET.get("status", "")
    return render(
        request,
        "incidents/list.html",
        {
            "incidents": selectors.incident_list(user=request.user, team=request.team, status=status),
            "status": status,
            "statuses": IncidentStatus.choices,
            "can_manage": may(request, MANAGE_INCIDENTS),
        },
    )


@team_view
def incident_create(request):
    require_perm(request, MANAGE_INCIDENTS)
    return form_page(
        request,
        form=IncidentForm(request.POST or None, team=request.team),
        service=services.incident_open,
        team=request.team,
        actor=request.user,
        template="incidents/form.html",
        success_message=lambda incident: (
            f"Incident #{incident.pk} opened; the team's responders have been emailed."
        ),
        success_url=lambda incident: reverse("incidents:incident-detail", args=[incident.pk]),
    )


def _detail_context(request, incident, **forms):
    candidates = services.contained_flag_states(incident)
    context = {
        "incident": incident,
        "timeline": incident.timeline.select_related("actor"),
        "can_manage": may(request, MANAGE_INCIDENTS) and incident.status != IncidentStatus.RESOLVED,
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
        request, selectors.incident_detail(user=request.user, team=request.team), pk=pk
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
                    request,
                    "incidents/detail.html",
                    _detail_context(request, incident, **{form_name: form}),
                    status=400,
                )
        else:
            messages.success(request, success)
            return redirect("incidents:incident-detail", pk=incident.pk)
    else:
        return render(
            request,
            "incidents/detail.html",
            _detail_context(request, incident, **{form_name: form}),
            status=400,
        )
    return redirect("incidents:incident-detail", pk=incident.pk)


@team_view
@require_POST
def incident_contain(request, pk: int):
    return _action(
        request,
        pk,
        "",
        None,
        services.incident_contain,
        "Contained: the affected servers' flags are off in every environment.",
    )


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
    return _action(
        request,
        pk,
        "session_form",
        SessionLinkForm(request.POST),
        services.incident_link_session,
        "Session linked.",
    )


@team_view
@require_POST
def incident_root_cause(request, pk: int):
    return _action(
        request,
        pk,
        "root_cause_form",
        RootCauseForm(request.POST),
        services.incident_record_root_cause,
        "Root cause recorded.",
    )


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
