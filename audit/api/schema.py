"""OpenAPI pieces of the audit API: the events page's shape (the filters are audit/filtersets.py)."""

from __future__ import annotations

from portal.api import Pagination


class EventPagination(Pagination):
    """The events list: a page, plus whether the payloads are shown to this person."""

    def get_paginated_response_schema(self, schema):
        paginated = super().get_paginated_response_schema(schema)
        paginated["properties"]["payloads_visible"] = {"type": "boolean"}
        paginated["required"] = [*paginated.get("required", []), "payloads_visible"]
        return paginated
