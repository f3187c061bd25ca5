"""What every team-scoped page shares: the team check, object lookup (404 before 403), and
turning a service's ValidationError into form errors."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Model, QuerySet
from django.forms import BaseForm
from django.shortcuts import get_object_or_404, render

from governance.forms import apply_service_errors
from portal.permissions import has_team_perm


def team_view(view: Callable) -> Callable:
    """Signed in, working in a team they can view (`request.team`); otherwise login or the no-team page."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.team:  # a lazy object: test its truth, not its identity
            return render(request, "portal/no_team.html", status=404)
        return view(request, *args, **kwargs)

    return wrapper


def require_perm(request, perm: str) -> None:
    """403 unless the user holds `perm` in the current team."""
    if not has_team_perm(request.user, perm, request.team):
        raise PermissionDenied(f"You need the '{perm.replace('_', ' ')}' permission in {request.team.name}.")


def get_team_object(request, queryset: QuerySet, *, perm: str | None = None, **lookup: Any) -> Model:
    """The object from the team's restricted queryset (404 if it is not there), then the permission (403)."""
    obj = get_object_or_404(queryset, **lookup)
    if perm is not None:
        require_perm(request, perm)
    return obj


def submit(form: BaseForm, service: Callable, /, **kwargs: Any) -> tuple[bool, Any]:
    """If the form is valid, call `service(**form.cleaned_data, **kwargs)`.

    Returns (True, result), or (False, None) with the errors — the form's own or the
    service's ValidationError — shown on the form.
    """
    if not form.is_valid():
        return False, None
    try:
        return True, service(**form.cleaned_data, **kwargs)
    except ValidationError as exc:
        apply_service_errors(form, exc)
        return False, None


def is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"
