"""POST /api/v1/tool-reports/ — an enforcement client reports the tool definitions it saw (docs/enforcer-api.md).

Bounded before anything is parsed: body size (MAX_REPORT_BYTES) and nesting depth (MAX_DEPTH, counted
on the raw bytes, so a deeply nested body never reaches the JSON parser's recursion); then the number
of servers and tools and the length of every field. Team-scoped by the token: a client reports only
for its own team's servers.
"""

from __future__ import annotations

import json
import re

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.authentication import ClientTokenAuthentication, IsEnforcementClient
from governance.choices import ToolReportSource
from governance.models.servers import SERVER_SLUG_VALIDATOR
from governance.services.discovery import tool_spec
from governance.services.tool_reports import tool_report_submit
from mcpgov.discover import (
    MAX_DEPTH,
    MAX_DESCRIPTION,
    MAX_NAME,
    MAX_REPORT_BYTES,
    MAX_SERVERS,
    MAX_TITLE,
    MAX_TOOLS,
)

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text, without parsing it."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRINGS.sub(b'""', raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


class BoundedJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read(MAX_REPORT_BYTES + 1) if stream is not None else b""
        if len(raw) > MAX_REPORT_BYTES:
            raise exceptions.ParseError(
                {"detail": f"The report is larger than {MAX_REPORT_BYTES} bytes.", "code": "report_too_large"}
            )
        if json_depth(raw) > MAX_DEPTH:
            raise exceptions.ParseError(
                {"detail": f"The report is nested deeper than {MAX_DEPTH} levels.", "code": "report_too_deep"}
            )
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise exceptions.ParseError(
                {"detail": f"The body is not JSON: {exc}", "code": "parse_error"}
            ) from exc


class ToolDefinitionSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=MAX_NAME)
    title = serializers.CharField(max_length=MAX_TITLE, allow_blank=True, required=False, default="")
    description = serializers.CharField(
        max_length=MAX_DESCRIPTION, allow_blank=True, required=False, default="", trim_whitespace=False
    )
    inputSchema = serializers.DictField(required=False, default=dict)
    annotations = serializers.DictField(required=False, default=dict)

    def validate_annotations(self, value):
        if len(value) > 32 or any(not isinstance(v, str | bool | int | float | None) for v in value.values()):
            raise serializers.ValidationError("Annotations are at most 32 plain values (readOnlyHint, ...).")
        return value


class ServerToolsSerializer(serializers.Serializer):
    server = serializers.CharField(max_length=100, validators=[SERVER_SLUG_VALIDATOR])
    tools = ToolDefinitionSerializer(many=True, max_length=MAX_TOOLS, allow_empty=True)

    def validate_tools(self, value):
        names = [t["name"] for t in value]
        if duplicates := sorted({n for n in names if names.count(n) > 1}):
            raise serializers.ValidationError(f"Tools listed more than once: {', '.join(duplicates)}.")
        return value


class ToolReportInputSerializer(serializers.Serializer):
    source = serializers.ChoiceField(choices=ToolReportSource.choices)
    servers = ServerToolsSerializer(many=True, max_length=MAX_SERVERS, allow_empty=False)

    def validate_servers(self, value):
        slugs = [s["server"] for s in value]
        if duplicates := sorted({s for s in slugs if slugs.count(s) > 1}):
            raise serializers.ValidationError(f"Servers listed more than once: {', '.join(duplicates)}.")
        return value


class ToolReportOutcomeSerializer(serializers.Serializer):
    server = serializers.CharField()
    status = serializers.ChoiceField(choices=["pending", "unchanged", "dismissed", "unknown_server"])
    report = serializers.IntegerField(allow_null=True, help_text="The stored report (pending only).")
    changes = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))
    detail = serializers.CharField(allow_blank=True)


class ToolReportResultSerializer(serializers.Serializer):
    servers = ToolReportOutcomeSerializer(many=True)


class ToolReportView(APIView):
    """Tool definitions seen by an enforcement client, stored for an admin's review (never policy by themselves)."""

    authentication_classes = [ClientTokenAuthentication]
    permission_classes = [IsEnforcementClient]
    parser_classes = [BoundedJSONParser]

    @extend_schema(request=ToolReportInputSerializer, responses=ToolReportResultSerializer)
    def post(self, request):
        data = ToolReportInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        servers = [
            {"server": entry["server"], "tools": [tool_spec(t) for t in entry["tools"]]}
            for entry in data.validated_data["servers"]
        ]
        outcomes = tool_report_submit(
            client=request.auth, source=data.validated_data["source"], servers=servers
        )
        return Response({"servers": [o.as_dict() for o in outcomes]})
