"""API plumbing shared by every app: the error shape and team-permission classes."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, permissions
from rest_framework.views import exception_handler as drf_exception_handler

from portal.permissions import has_team_perm


def exception_handler(exc, context):
    """Every API error is `{"detail": "...", "code": "..."}` plus field errors when there are some."""
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail=detail)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(detail=str(exc) or None)
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


def _first_message(data) -> str:
    if isinstance(data, dict):
        for key, value in data.items():
            msg = _first_message(value)
            return msg if key == "non_field_errors" else f"{key}: {msg}"
    if isinstance(data, list) and data:
        return _first_message(data[0])
    return str(data)


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


def forbidden_unless(user, perm: str, team) -> None:
    if not has_team_perm(user, perm, team):
        raise exceptions.PermissionDenied(
            f"You do not have the '{perm.replace('_', ' ')}' permission in this team."
        )


__all__ = ["TeamPermission", "exception_handler", "forbidden_unless"]
