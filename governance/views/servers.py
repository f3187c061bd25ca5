"""The MCP server catalogue: list, create, edit, delete, detail with tools, tool discovery and the
review of tool definitions reported from the enforcement side."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from governance import selectors
from governance.choices import ToolReportStatus
from governance.forms.servers import ServerFilterForm, ServerForm, ToolForm
from governance.models import ToolReport
from governance.services import discovery, tool_reports
from governance.services import servers as services
from portal.pages import delete_page, form_page, get_team_object, is_htmx, require_perm, submit, team_view
from portal.permissions import CHANGE_POLICY


@team_view
def server_list(request):
    filters = ServerFilterForm(request.GET or None)
    category = filters.cleaned_data["category"] if filters.is_valid() else ""
    servers = selectors.server_list(user=request.user, team=request.team, category=category)
    return render(
        request,
        "governance/servers/list.html",
        {"servers": servers, "filters": filters, "category": category},
    )


@team_view
def server_detail(request, pk: int):
    server = get_team_object(request, selectors.server_detail(user=request.user, team=request.team, pk=pk))
    tools = [
        (tool, ToolForm(initial=_tool_initial(tool), prefix=f"tool-{tool.pk}")) for tool in server.tools.all()
    ]
    reports = [
        (report, services.tool_changes(server=server, tools=report.tools), _classified(report.tools))
        for report in server.tool_reports.filter(status=ToolReportStatus.PENDING).order_by(
            "-last_reported_at"
        )
    ]
    return render(
        request,
        "governance/servers/detail.html",
        {
            "server": server,
            "tools": tools,
            "reports": reports,
            "portal_discovers": server.transport != "stdio" or discovery.stdio_discovery_enabled(),
        },
    )


def _classified(specs: list[dict]) -> list[tuple[dict, str]]:
    """Each reported tool with the class its annotations give (no readOnlyHint: true means write)."""
    return [
        (spec, "read" if (spec.get("annotations") or {}).get("readOnlyHint") is True else "write")
        for spec in specs
    ]


def _server(request, pk: int):
    return get_team_object(
        request, selectors.servers_for_team(user=request.user, team=request.team), perm=CHANGE_POLICY, pk=pk
    )


def _server_url(server) -> str:
    return reverse("governance:server-detail", args=[server.pk])


@team_view
def server_create(request):
    require_perm(request, CHANGE_POLICY)
    return form_page(
        request,
        form=ServerForm(request.POST or None),
        service=services.server_create,
        team=request.team,
        actor=request.user,
        template="governance/servers/form.html",
        success_message=lambda server: f"Server {server.slug} added.",
        success_url=_server_url,
    )


@team_view
def server_edit(request, pk: int):
    server = _server(request, pk)
    return form_page(
        request,
        form=ServerForm(request.POST or None, instance=server),
        service=services.server_update,
        server=server,
        actor=request.user,
        template="governance/servers/form.html",
        context={"server": server},
        success_message=f"Server {server.slug} saved.",
        success_url=_server_url(server),
    )


@team_view
def server_delete(request, pk: int):
    server = _server(request, pk)
    return delete_page(
        request,
        server,
        delete=lambda: services.server_delete(server=server, actor=request.user),
        kind="server",
        success_message=f"Server {server.slug} deleted.",
        success_url=reverse("governance:server-list"),
        cancel_url=_server_url(server),
        consequences="Its tools, allowlist entries, environment bindings and rate limits are removed with it.",
    )


@team_view
@require_POST
def server_discover(request, pk: int):
    """Connect to the server with the MCP client and record the tools it offers."""
    server = _server(request, pk)
    try:
        report = discovery.server_discover_tools(server=server, actor=request.user)
    except discovery.DiscoveryRefused as exc:
        messages.error(request, f"Not discovered from the portal: {exc}")
    except discovery.DiscoveryError as exc:
        messages.error(request, f"Discovery failed: {exc}")
    else:
        parts = [f"{key} {', '.join(names)}" for key, names in report.items() if names]
        messages.success(request, f"Tools discovered on {server.slug}: {'; '.join(parts) or 'no change'}.")
    return redirect("governance:server-detail", pk=server.pk)


def _team_report(request, pk: int) -> ToolReport:
    return get_team_object(
        request,
        ToolReport.objects.restrict(request.user)
        .filter(server__team=request.team)
        .select_related("server__team"),
        perm=CHANGE_POLICY,
        pk=pk,
    )


@team_view
@require_POST
def tool_report_approve(request, pk: int):
    """Record a report's tools on its server, as discovery does (the bundle then pins them)."""
    report = _team_report(request, pk)
    try:
        changes = tool_reports.tool_report_approve(report=report, actor=request.user)
    except ValidationError as exc:
        messages.error(request, f"Not approved: {' '.join(exc.messages)}")
    else:
        parts = [f"{key} {', '.join(names)}" for key, names in changes.items() if names]
        messages.success(
            request, f"Reported tools approved on {report.server.slug}: {'; '.join(parts) or 'no change'}."
        )
    return redirect("governance:server-detail", pk=report.server_id)


@team_view
@require_POST
def tool_report_dismiss(request, pk: int):
    report = _team_report(request, pk)
    try:
        tool_reports.tool_report_dismiss(report=report, actor=request.user)
    except ValidationError as exc:
        messages.error(request, f"Not dismissed: {' '.join(exc.messages)}")
    else:
        messages.success(request, f"Reported tool definitions from {report.client_name} dismissed.")
    return redirect("governance:server-detail", pk=report.server_id)


@team_view
@require_POST
def tool_edit(request, pk: int):
    """Override a tool's read/write class or require approval; answers htmx with the updated row."""
    tool = get_team_object(
        request, selectors.tools_for_team(user=request.user, team=request.team), perm=CHANGE_POLICY, pk=pk
    )
    form = ToolForm(request.POST, prefix=f"tool-{tool.pk}")
    ok, _ = submit(form, services.tool_update, tool=tool, actor=request.user)
    if ok:
        messages.success(
            request,
            f"Tool {tool.name} saved: {tool.access_class}"
            f"{', approval required' if tool.approval_required else ''}.",
        )
        form = ToolForm(initial=_tool_initial(tool), prefix=f"tool-{tool.pk}")
    if is_htmx(request):
        return render(
            request, "governance/servers/_tool_row.html", {"tool": tool, "form": form, "oob_messages": True}
        )
    if not ok:
        messages.error(
            request, f"Tool {tool.name} not saved: {' '.join(str(e) for e in form.errors.values())}"
        )
    return redirect("governance:server-detail", pk=tool.server_id)


def _tool_initial(tool) -> dict:
    return {"access_class_override": tool.access_class_override, "approval_required": tool.approval_required}
