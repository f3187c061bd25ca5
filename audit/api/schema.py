"""OpenAPI pieces of the audit API: the session list's filters and the events page's shape."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter

from audit.choices import CallStatus, SessionState, Trigger
from portal.api import Pagination

SESSION_FILTER_PARAMS = [
    OpenApiParameter("team", str, description="Only sessions of this team (slug)."),
    OpenApiParameter("role", str),
    OpenApiParameter("environment", str, description="Environment name."),
    OpenApiParameter("server", str, description="Sessions that called this server (slug)."),
    OpenApiParameter("status", str, enum=list(CallStatus.values)),
    OpenApiParameter("state", str, enum=list(SessionState.values)),
    OpenApiParameter("trigger", str, enum=list(Trigger.values)),
    OpenApiParameter("acknowledged", str, enum=["yes", "no"]),
    OpenApiParameter("date_from", str, description="YYYY-MM-DD, on started_at."),
    OpenApiParameter("date_to", str, description="YYYY-MM-DD, on started_at (inclusive)."),
]


class EventPagination(Pagination):
    """The events list: a page, plus whether the payloads are shown to this person."""

    def get_paginated_response_schema(self, schema):
        paginated = super().get_paginated_response_schema(schema)
        paginated["properties"]["payloads_visible"] = {"type": "boolean"}
        paginated["required"] = [*paginated.get("required", []), "payloads_visible"]
        return paginated
