"""Reviewers' pages: the session list, a session's call timeline, the halted queue, exports.

Everything is scoped to the team the user works in (`request.team`): another team's session
is a 404. Writes go through the audit services, which check the permission (403) and the
rules (shown as messages).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from audit import selectors, services
from audit.choices import ExportFormat
from audit.exports import CONTENT_TYPES, EXTENSIONS, export_chunks
from audit.forms import AcknowledgeForm, ApprovalForm, DecisionForm, ExplanationForm, SessionFilterForm
from audit.models import AgentSession, AuditEvent, SessionDecision
from portal.pages import may, run_action, team_view
from portal.permissions import ACKNOWLEDGE_SESSION, RELEASE_SESSION, VIEW_PAYLOADS

PAGE_SIZE = 50


def _session(request, session_id) -> AgentSession:
    return get_object_or_404(
        selectors.with_end(AgentSession.objects.for_team(request.team)).select_related(
            "environment", "client", "acknowledgement__reviewer"
        ),
        pk=session_id,
    )


def _flag_warning(session: AgentSession) -> str:
    """What the release form warns about when the flag that halted the session is still off."""
    flag = services.halting_flag_still_off(session)
    if not flag:
        return ""
    return (
        f"Flag {flag} is still off in {session.environment.name}: released now, the session halts again "
        "at its next call of that flag. Enable the flag first (Kill switch), or release anyway."
    )


@team_view
def session_list(request):
    form = SessionFilterForm(request.GET or None, team=request.team)
    filters = form.filters() if request.GET else {}
    qs = selectors.sessions_for_review(team=request.team, filters=filters)
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = {k: v for k, v in request.GET.items() if k != "page" and v}
    return render(
        request,
        "audit/session_list.html",
        {
            "form": form,
            "page": page,
            "sessions": page.object_list,
            "query": urlencode(query),
            "export_formats": ExportFormat.choices,
            "filtered": bool(filters),
        },
    )


CALLS_PER_PAGE = 50
CALL_FILTERS = ("status", "server", "tool")


def collapse_repeats(calls: list) -> list:
    """Consecutive refused calls of the same tool with the same trigger shown once, with how many
    more there were (an agent retrying a refused call 40 times is one line, not 40)."""
    out: list = []
    for call in calls:
        prev = out[-1] if out else None
        if (
            prev is not None
            and call.is_blocked
            and prev.is_blocked
            and (call.first.server, call.first.tool, call.trigger)
            == (prev.first.server, prev.first.tool, prev.trigger)
        ):
            prev.repeats.append(call)
            continue
        call.repeats = []
        out.append(call)
    return out


def _call_filters(request, calls: list) -> tuple[dict[str, str], list]:
    chosen = {k: request.GET.get(k, "").strip() for k in CALL_FILTERS if request.GET.get(k, "").strip()}
    if "status" in chosen:
        calls = [c for c in calls if c.status == chosen["status"]]
    if "server" in chosen:
        calls = [c for c in calls if c.first.server == chosen["server"]]
    if "tool" in chosen:
        calls = [c for c in calls if c.first.tool == chosen["tool"]]
    return chosen, calls


@team_view
def session_detail(request, session_id):
    session = _session(request, session_id)
    every_call = selectors.session_timeline(session=session)
    acknowledgement = getattr(session, "acknowledgement", None)
    unexplained = set(services.unexplained_failed_calls(session))
    can_ack = may(request, ACKNOWLEDGE_SESSION) and acknowledgement is None
    chosen, calls = _call_filters(request, every_call)
    page = Paginator(collapse_repeats(calls), CALLS_PER_PAGE).get_page(request.GET.get("page"))
    calls = page.object_list
    for call in calls:
        call.needs_explanation = call.call_id in unexplained
        call.explain_form = (
            ExplanationForm(
                initial={
                    "call_id": call.call_id,
                    "explanation": call.explanation.explanation if call.explanation else "",
                },
                prefix=f"x{call.first.seq}",
            )
            if call.is_failed and can_ack
            else None
        )
    call_choices = {
        "status": sorted({c.status for c in every_call}),
        "server": sorted({c.first.server for c in every_call}),
        "tool": sorted({c.first.tool for c in every_call}),
    }
    return render(
        request,
        "audit/session_detail.html",
        {
            "session": session,
            "calls": calls,
            "page": page,
            "call_filters": chosen,
            "call_choices": call_choices,
            "call_query": urlencode(chosen),
            "calls_shown": len(every_call),
            "acknowledgement": acknowledgement,
            "unexplained": unexplained,
            "show_payloads": may(request, VIEW_PAYLOADS),
            "can_ack": can_ack,
            "can_release": may(request, RELEASE_SESSION),
            "ack_form": AcknowledgeForm(),
            "decision_form": DecisionForm(),
            "approval_forms": [
                (p, ApprovalForm(initial={"call_id": p["call_id"]}, prefix=f"a{i}"))
                for i, p in enumerate(session.pending_approvals)
            ],
            "decisions": SessionDecision.objects.filter(session=session).select_related("decided_by"),
            "history": selectors.session_history(session=session),
            "flag_warning": _flag_warning(session) if session.is_waiting else "",
            "recent_calls": selectors.last_calls(session=session)
            if session.is_waiting or session.halted_then_ended
            else [],
            "export_formats": ExportFormat.choices,
        },
    )


def _back(request, session: AgentSession, anchor: str = ""):
    target = request.POST.get("next") or ""
    if target == "queue":
        return redirect("audit:halted-queue")
    return redirect(reverse("audit:session-detail", args=[session.pk]) + (f"#{anchor}" if anchor else ""))


@team_view
@require_POST
def session_acknowledge(request, session_id):
    session = _session(request, session_id)
    form = AcknowledgeForm(request.POST)
    if form.is_valid():
        run_action(
            request,
            lambda: services.session_acknowledge(
                session=session, reviewer=request.user, note=form.cleaned_data["note"]
            ),
            "Session acknowledged.",
        )
    return _back(request, session, "review")


@team_view
@require_POST
def session_explain(request, session_id):
    session = _session(request, session_id)
    prefix = request.POST.get("prefix") or None
    form = ExplanationForm(request.POST, prefix=prefix)
    if not form.is_valid():
        messages.error(request, "Write what the failed call attempted and why it failed.")
        return _back(request, session, "timeline")
    run_action(
        request,
        lambda: services.failed_call_explain(session=session, reviewer=request.user, **form.cleaned_data),
        "Explanation saved.",
    )
    return _back(request, session, f"call-{form.cleaned_data['call_id']}")


def _decision_view(service, success: str, *, confirmable: bool = False):
    @team_view
    @require_POST
    def view(request, session_id):
        session = _session(request, session_id)
        form = DecisionForm(request.POST)
        if not form.is_valid():
            messages.error(request, "A reason is required.")
            return _back(request, session)
        extra = {"flag_off_confirmed": form.cleaned_data["confirm_flag_off"]} if confirmable else {}
        run_action(
            request,
            lambda: service(
                session=session, reviewer=request.user, reason=form.cleaned_data["reason"], **extra
            ),
            success.format(session=session.short_id),
        )
        return _back(request, session)

    return view


session_release = _decision_view(
    services.session_release, "Session {session} may continue.", confirmable=True
)
session_end = _decision_view(services.session_end, "Session {session} ended.")


@team_view
@require_POST
def call_approval(request, session_id):
    session = _session(request, session_id)
    form = ApprovalForm(request.POST, prefix=request.POST.get("prefix") or None)
    if not form.is_valid():
        messages.error(request, "Choose approve or deny and give a reason.")
        return _back(request, session)
    data = form.cleaned_data
    run_action(
        request,
        lambda: services.call_approval_decide(session=session, reviewer=request.user, **data),
        f"Call {data['call_id']} {'approved' if data['decision'] == 'approve' else 'denied'}.",
    )
    return _back(request, session)


@team_view
def halted_queue(request):
    sessions = selectors.halted_queue(team=request.team)
    for session in sessions:
        session.flag_warning = _flag_warning(session) if session.is_waiting else ""
        session.approval_forms = [
            (p, ApprovalForm(initial={"call_id": p["call_id"]}, prefix=f"a{i}"))
            for i, p in enumerate(session.pending_approvals)
        ]
    return render(
        request,
        "audit/halted_queue.html",
        {
            "sessions": sessions,
            "can_release": may(request, RELEASE_SESSION),
            "decision_form": DecisionForm(),
        },
    )


def _export_response(events, fmt: str, include_payloads: bool, filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        export_chunks(events, fmt, include_payloads=include_payloads), content_type=CONTENT_TYPES[fmt]
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}.{EXTENSIONS[fmt]}"'
    return response


def _format(request) -> str:
    fmt = request.GET.get("format", ExportFormat.JSONL)
    return fmt if fmt in ExportFormat.values else ExportFormat.JSONL


@team_view
def session_export(request, session_id):
    session = _session(request, session_id)
    events = AuditEvent.objects.filter(session=session).order_by("seq").iterator(chunk_size=2000)
    return _export_response(events, _format(request), may(request, VIEW_PAYLOADS), f"session-{session.pk}")


@team_view
def range_export(request):
    """The events of every session the list's filters select (same query string)."""
    form = SessionFilterForm(request.GET or None, team=request.team)
    filters = form.filters() if request.GET else {}
    sessions = selectors.sessions_for_review(team=request.team, filters=filters).values("pk")
    events = selectors.session_events(sessions=sessions).iterator(chunk_size=2000)
    return _export_response(
        events, _format(request), may(request, VIEW_PAYLOADS), f"audit-{request.team.slug}"
    )
