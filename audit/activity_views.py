"""The activity page: charts of calls, refusals and halts over time, usage per server and tool,
the gateways and the bundle version each runs, and cost per server per month (CSV, COST_LOG.md).

Scoped to the team the user works in; every member of it may read it (counts, no payloads).
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone

from audit import activity
from audit.forms import ActivityForm
from portal.pages import team_view

METRIC_TITLES = {"calls": "Calls", "refusals": "Refusals", "halts": "Halts"}


def _form(request) -> ActivityForm:
    return ActivityForm(request.GET or None)


def _query(form: ActivityForm) -> str:
    """The picker's query string for the export links (only what the form accepted)."""
    if not (form.is_bound and form.is_valid()):
        return ""
    keep = {k: v for k, v in form.cleaned_data.items() if v and k in ("range", "start", "end", "by")}
    return urlencode({k: str(v) for k, v in keep.items()})


@team_view
def activity_page(request):
    form = _form(request)
    now = timezone.now()
    rng = form.time_range(now)
    by = form.split_by()
    charts = []
    for metric in activity.METRICS:
        series = activity.activity_series(team=request.team, rng=rng, metric=metric, by=by)
        charts.append(
            {
                "id": f"chart-{metric}",
                "data_id": f"chart-{metric}-data",
                "title": METRIC_TITLES[metric],
                "series": series,
                "data": series.chart(),
            }
        )
    stale_after = timedelta(minutes=settings.MCPGOV_STALE_CLIENT_MINUTES)
    status = 400 if form.is_bound and not form.is_valid() else 200
    return render(
        request,
        "audit/activity.html",
        {
            "form": form,
            "range": rng,
            "by": by,
            "charts": charts,
            **dict(zip(("servers", "tools"), activity.usage_tables(team=request.team, rng=rng), strict=True)),
            "gateways": activity.gateways(team=request.team, stale_after=stale_after, now=now),
            "cost": activity.cost_by_month(team=request.team, rng=rng),
            "query": _query(form),
            "stale_minutes": settings.MCPGOV_STALE_CLIENT_MINUTES,
        },
        status=status,
    )


def _cost(request):
    form = _form(request)
    return activity.cost_by_month(team=request.team, rng=form.time_range(timezone.now()))


def _filename(request, report: activity.CostReport, ext: str) -> str:
    return f"cost-{request.team.slug}-{report.start:%Y-%m}-to-{report.last_month:%Y-%m}.{ext}"


@team_view
def cost_csv(request):
    report = _cost(request)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(activity.cost_csv_rows(report))
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_filename(request, report, "csv")}"'
    return response


@team_view
def cost_log(request):
    report = _cost(request)
    text = activity.cost_log_markdown(report, team_name=request.team.name, generated_at=timezone.now())
    response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="COST_LOG.md"'
    return response
