"""Tool definitions reported from the enforcement side, and an admin's review of them.

An enforcement client reports what its servers offer (`mcpgov discover`, or a gateway at session
start). A report is stored pending review and changes no policy: only an admin's approval records the
tools (the same `server_tools_record` as discovery, so the read/write class comes from the
annotations and the admin's overrides survive), which rebuilds the bundle and pins the definitions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from governance.choices import ToolReportSource, ToolReportStatus
from governance.models import EnforcementClient, McpServer, ToolReport
from governance.services.common import check_policy_perm
from governance.services.servers import server_tools_record, tool_changes
from portal.choices import ChangeEventType
from portal.services import change_record, real_user

# Pending reports kept per server; an older one is superseded when a newer one arrives.
MAX_PENDING_PER_SERVER = 10


@dataclass
class ReportOutcome:
    server: str
    status: str  # pending | unchanged | dismissed | unknown_server
    report: int | None = None
    changes: dict[str, list[str]] = field(default_factory=dict)
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "status": self.status,
            "report": self.report,
            "changes": self.changes,
            "detail": self.detail,
        }


def content_hash(tools: list[dict[str, Any]]) -> str:
    canonical = sorted(tools, key=lambda t: t["name"])
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@transaction.atomic
def tool_report_submit(
    *, client: EnforcementClient, source: str, servers: list[dict[str, Any]]
) -> list[ReportOutcome]:
    """Store what `client` saw: per server, a pending report unless nothing would change.

    `servers` is [{"server": slug, "tools": [spec, ...]}] with specs as `server_tools_record` takes
    them. A slug is looked up in the client's own team only; another team's server is unknown.
    """
    if source not in ToolReportSource.values:
        raise ValidationError({"source": f"Unknown source {source!r}."})
    now = timezone.now()
    by_slug = {s.slug: s for s in McpServer.objects.filter(team_id=client.team_id)}
    outcomes: list[ReportOutcome] = []
    for entry in servers:
        slug, tools = entry["server"], entry["tools"]
        server = by_slug.get(slug)
        if server is None:
            outcomes.append(
                ReportOutcome(
                    slug,
                    "unknown_server",
                    detail=f"No server {slug!r} in the catalogue of team {client.team.slug}; an admin adds it first.",
                )
            )
            continue
        changes = tool_changes(server=server, tools=tools)
        if not any(changes.values()) and server.tools_discovered_at is not None:
            outcomes.append(ReportOutcome(slug, "unchanged"))
            continue
        digest = content_hash(tools)
        if ToolReport.objects.filter(
            server=server, content_hash=digest, status=ToolReportStatus.DISMISSED
        ).exists():
            outcomes.append(ReportOutcome(slug, "dismissed", changes=changes))
            continue
        report = (
            ToolReport.objects.select_for_update()
            .filter(server=server, content_hash=digest, status=ToolReportStatus.PENDING)
            .first()
        )
        if report is not None:
            report.times_reported += 1
            report.last_reported_at = now
            report.client, report.client_name = client, client.name
            report.save(update_fields=["times_reported", "last_reported_at", "client", "client_name"])
        else:
            report = ToolReport.objects.create(
                server=server,
                client=client,
                client_name=client.name,
                environment_name=client.environment.name,
                source=source,
                tools=tools,
                content_hash=digest,
                last_reported_at=now,
            )
            older = ToolReport.objects.filter(server=server, status=ToolReportStatus.PENDING).order_by(
                "-last_reported_at", "-pk"
            )[MAX_PENDING_PER_SERVER:]
            ToolReport.objects.filter(pk__in=[r.pk for r in older]).update(status=ToolReportStatus.SUPERSEDED)
        outcomes.append(ReportOutcome(slug, "pending", report=report.pk, changes=changes))
    return outcomes


def _pending(report: ToolReport) -> ToolReport:
    report = ToolReport.objects.select_for_update().select_related("server__team").get(pk=report.pk)
    if report.status != ToolReportStatus.PENDING:
        raise ValidationError(
            f"This report is {report.get_status_display().lower()}, not waiting for review."
        )
    return report


@transaction.atomic
def tool_report_approve(*, report: ToolReport, actor=None) -> dict[str, list[str]]:
    """Record the reported tools on the server (as discovery does); other pending reports are superseded."""
    check_policy_perm(actor, report.server.team)
    report = _pending(report)
    changes = server_tools_record(server=report.server, tools=report.tools, actor=actor)
    report.status = ToolReportStatus.APPROVED
    report.reviewed_by = real_user(actor)
    report.reviewed_at = timezone.now()
    report.save(update_fields=["status", "reviewed_by", "reviewed_at"])
    ToolReport.objects.filter(server=report.server, status=ToolReportStatus.PENDING).update(
        status=ToolReportStatus.SUPERSEDED
    )
    return changes


@transaction.atomic
def tool_report_dismiss(*, report: ToolReport, actor=None) -> ToolReport:
    """Reject a report: the same definitions reported again stay dismissed (no new review)."""
    check_policy_perm(actor, report.server.team)
    report = _pending(report)
    report.status = ToolReportStatus.DISMISSED
    report.reviewed_by = real_user(actor)
    report.reviewed_at = timezone.now()
    report.save(update_fields=["status", "reviewed_by", "reviewed_at"])
    change_record(
        team=report.server.team,
        actor=actor,
        event_type=ChangeEventType.TOOL_REPORT_DISMISSED,
        obj=report.server,
        summary=f"Reported tool definitions dismissed (from {report.client_name})",
    )
    return report
