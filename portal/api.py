"""API plumbing shared by every app: the error shape and team-permission classes."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError
from django.db.models import ProtectedError, RestrictedError
from django.http import JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, pagination, permissions, serializers
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from portal.errors import ServiceError
from portal.pages import ChangeDeferred, protected_message
from portal.permissions import VIEW, has_team_perm, teams_for_user

log = logging.getLogger(__name__)


def exception_handler(exc, context):
    """Every API error is `{"detail": "...", "code": "..."}` plus field errors when there are some."""
    if isinstance(exc, ServiceError):  # the application's own refusals (portal/errors.py)
        return Response(exc.as_body(), status=exc.status)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail=detail)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(detail=str(exc) or None)
    elif isinstance(exc, ProtectedError | RestrictedError):
        exc = Conflict(protected_message(exc))
    elif isinstance(exc, DataError):
        # The database refused a value (out of range, NUL, bad encoding) that validation let through:
        # the client's input, so a 400; logged, because a field's validation should have caught it.
        log.warning(
            "database refused a value from %s: %s", context.get("request") and context["request"].path, exc
        )
        exc = exceptions.ValidationError({"non_field_errors": ["A value in the request cannot be stored."]})
    elif isinstance(exc, ChangeDeferred):
        # Accepted, not applied: the edit is in the team's draft (202, with where to review it).
        return Response({"detail": exc.message, "code": "drafted", "draft": exc.url}, status=202)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(exc, exceptions.ValidationError):
        first = _first_message(data)
        response.data = {"detail": first, "code": "invalid", "errors": data}
    elif isinstance(data, dict) and "detail" in data:
        detail = data["detail"]
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        response.data = {**data, "detail": str(detail), "code": data.get("code", code)}
    return response


class Conflict(exceptions.APIException):
    status_code = 409
    default_detail = "The object is still in use."
    default_code = "protected"


def _first_message(data) -> str:
    if isinstance(data, dict):
        for key, value in data.items():
            msg = _first_message(value)
            return msg if key == "non_field_errors" else f"{key}: {msg}"
    if isinstance(data, list) and data:
        return _first_message(data[0])
    return str(data)


class Pagination(pagination.LimitOffsetPagination):
    """`?limit=&offset=`, refused with 400 unless each is an integer in 0..MAX_OFFSET.

    (DRF's own class answers 500 for an offset past PostgreSQL's bigint and silently
    ignores a negative or non-numeric value.)"""

    max_limit = 1000
    MAX_OFFSET = 10**9

    def _param(self, request, name: str, default: int | None, maximum: int) -> int | None:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return default
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or int(raw) > maximum:
            raise exceptions.ValidationError({name: [f"Must be an integer between 0 and {maximum}."]})
        return int(raw)

    def get_limit(self, request):
        limit = self._param(request, self.limit_query_param, self.default_limit, self.max_limit)
        return limit if limit else self.default_limit  # limit=0: the default page size, as in DRF

    def get_offset(self, request):
        return self._param(request, self.offset_query_param, 0, self.MAX_OFFSET)

    def get_schema_operation_parameters(self, view):
        params = super().get_schema_operation_parameters(view)
        bounds = {self.limit_query_param: self.max_limit, self.offset_query_param: self.MAX_OFFSET}
        for param in params:
            param["schema"] = {**param["schema"], "minimum": 0, "maximum": bounds[param["name"]]}
        return params


class TeamPermission(permissions.BasePermission):
    """Object-level check through the one helper; lists use restricted querysets instead.

    Views set `team_perm_read` (default "view_team") and `team_perm_write` (default
    "change_policy") and implement `get_team(obj)` when the object is not a team's own.
    """

    def has_object_permission(self, request, view, obj):
        team = view.get_object_team(obj) if hasattr(view, "get_object_team") else obj.team
        if request.method in permissions.SAFE_METHODS:
            return has_team_perm(request.user, getattr(view, "team_perm_read", "view_team"), team)
        return has_team_perm(request.user, getattr(view, "team_perm_write", "change_policy"), team)


@extend_schema_field(OpenApiTypes.STR)
class TeamField(serializers.SlugRelatedField):
    """The owning team by slug, among the teams the user can see (a service then checks the write), or
    among `queryset` when one is given.

    A NUL is refused before the lookup (PostgreSQL cannot compare text holding one).
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("slug_field", "slug")
        super().__init__(**kwargs)

    def get_queryset(self):
        if self.queryset is not None:  # a public read that names any team (the signing keys)
            return self.queryset.all()
        request = self.context.get("request")
        return teams_for_user(request.user if request else None, VIEW)

    def to_internal_value(self, data):
        if isinstance(data, str) and "\x00" in data:
            raise serializers.ValidationError("Null characters are not allowed.")
        return super().to_internal_value(data)


def api_not_found(request, *args, **kwargs):
    """Any method on an unknown path under /api/: the API's error shape, not an HTML page."""
    return JsonResponse({"detail": "No such API endpoint.", "code": "not_found"}, status=404)
