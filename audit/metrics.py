"""The audit app's metrics read at scrape time (registered with portal.metrics in AuditConfig.ready())."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily

from audit.models import AgentSession


def session_gauges() -> Iterator[GaugeMetricFamily]:
    sessions = GaugeMetricFamily("mcpgov_portal_sessions", "Agent sessions by state", labels=["state"])
    rows = AgentSession.objects.values_list("state").annotate(n=Count("pk")).order_by("state")
    for state, n in rows:
        sessions.add_metric([state], n)
    yield sessions
