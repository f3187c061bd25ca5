"""The page toolkit every app's views share: the team check, object lookup (404 before 403),
a service's ValidationError or ServiceError shown on the form or the page, the shared form
fields, and the generic edit and delete pages of a team object."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.db.models import Model, ProtectedError, QuerySet, RestrictedError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from portal.errors import ServiceError
from portal.permissions import has_team_perm

# --- the team check and lookups -------------------------------------------------------------------


def team_view(view: Callable) -> Callable:
    """Signed in, working in a team they can view (`request.team`); otherwise login or the no-team page."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.team:  # a lazy object: test its truth, not its identity
            return render(request, "portal/no_team.html", status=404)
        return view(request, *args, **kwargs)

    return wrapper


def may(request, perm: str) -> bool:
    """Whether the user holds `perm` in the current team (for showing or hiding actions)."""
    return has_team_perm(request.user, perm, request.team)


def require_perm(request, perm: str) -> None:
    """403 unless the user holds `perm` in the current team."""
    if not may(request, perm):
        raise PermissionDenied(f"You need the '{perm.replace('_', ' ')}' permission in {request.team.name}.")


def get_team_object(request, queryset: QuerySet, *, perm: str | None = None, **lookup: Any) -> Model:
    """The object from the team's restricted queryset (404 if it is not there), then the permission (403)."""
    obj = get_object_or_404(queryset, **lookup)
    if perm is not None:
        require_perm(request, perm)
    return obj


def is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


# --- forms and services ---------------------------------------------------------------------------


def apply_service_errors(form: forms.BaseForm, exc: ValidationError) -> None:
    """Show a service's ValidationError on the form: on its field if the form has it, else on top."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc.messages)
        return
    for field, errors in exc.message_dict.items():
        if field in form.fields and field != NON_FIELD_ERRORS:
            form.add_error(field, errors)
        else:
            label = "" if field == NON_FIELD_ERRORS else f"{field.replace('_', ' ').capitalize()}: "
            form.add_error(None, [f"{label}{message}" for message in errors])


def submit(form: forms.BaseForm, service: Callable, /, **kwargs: Any) -> tuple[bool, Any]:
    """If the form is valid, call `service(**form.cleaned_data, **kwargs)`.

    Returns (True, result), or (False, None) with the errors — the form's own, or the
    service's ValidationError or ServiceError — shown on the form.
    """
    if not form.is_valid():
        return False, None
    try:
        return True, service(**form.cleaned_data, **kwargs)
    except ValidationError as exc:
        apply_service_errors(form, exc)
    except ServiceError as exc:
        form.add_error(exc.field if exc.field in form.fields else None, exc.page_message())
    return False, None


def run_action(request, action: Callable[[], Any], success: str) -> bool:
    """Run a page's workflow step (a service call); a ServiceError becomes the page's error message."""
    try:
        action()
    except ServiceError as exc:
        messages.error(request, exc.page_message())
        return False
    messages.success(request, success)
    return True


def secret_page(request, template: str, context: dict) -> HttpResponse:
    """The one page that shows a new secret (a token, a client secret, a key): rendered, never
    redirected to, and never cached, so the secret exists only in this response."""
    response = render(request, template, context)
    response["Cache-Control"] = "no-store"
    return response


def protected_message(exc: ProtectedError | RestrictedError) -> str:
    """Which kinds of objects still refer to it (the service's transaction rolled back)."""
    kinds = sorted({str(obj._meta.verbose_name_plural) for obj in exc.args[1]}) if len(exc.args) > 1 else []
    what = ", ".join(kinds) or "other objects"
    return f"It cannot be deleted while {what} refer to it; nothing was changed."


class LinesField(forms.CharField):
    """A list of strings edited one per line in a textarea (blank lines are ignored)."""

    widget = forms.Textarea(attrs={"rows": 3})

    def __init__(self, *, item_validators=(), **kwargs):
        kwargs.setdefault("required", False)
        self.item_validators = list(item_validators)
        super().__init__(strip=False, **kwargs)

    def prepare_value(self, value):
        if isinstance(value, (list, tuple)):
            return "\n".join(str(v) for v in value)
        return value

    def to_python(self, value) -> list[str]:
        if isinstance(value, (list, tuple)):
            return [str(v).strip() for v in value if str(v).strip()]
        return [line.strip() for line in (value or "").splitlines() if line.strip()]

    def validate(self, value) -> None:
        if self.required and not value:
            raise ValidationError(self.error_messages["required"], code="required")

    def run_validators(self, value) -> None:
        errors = []
        for item in value:
            for validator in self.item_validators:
                try:
                    validator(item)
                except ValidationError as exc:
                    errors.append(ValidationError(f"{item}: {' '.join(exc.messages)}"))
        if errors:
            raise ValidationError(errors)

    def has_changed(self, initial, data) -> bool:
        return self.to_python(initial) != self.to_python(data)


DATETIME_INPUT = "%Y-%m-%dT%H:%M"


class UtcDateTimeInput(forms.DateTimeInput):
    """The browser's date-time picker; the value is read as UTC (the label says so)."""

    input_type = "datetime-local"

    def __init__(self, **kwargs):
        super().__init__(format=DATETIME_INPUT, **kwargs)


class ParseOnlyModelForm(forms.ModelForm):
    """A ModelForm used for its fields only.

    ModelForm would copy the data onto the instance and validate it; here the service does
    both, so the instance (passed for initial values) stays untouched and the service can
    diff old against new for the change history.
    """

    def _post_clean(self) -> None:
        pass


# --- generic pages of a team object ---------------------------------------------------------------


def _text(value: str | Callable[[Any], str], result: Any) -> str:
    return value(result) if callable(value) else value


def form_page(
    request,
    *,
    form: forms.BaseForm,
    service: Callable,
    template: str,
    success_message: str | Callable[[Any], str],
    success_url: str | Callable[[Any], str],
    context: dict | None = None,
    **service_kwargs: Any,
) -> HttpResponse:
    """A create or edit page: GET shows `form`; POST calls `service` through `submit`.

    On success: the message and a redirect (both may be functions of the service's result);
    otherwise the form again with its errors. `service_kwargs` go to the service (team,
    actor, the object being edited). The caller has checked the permission.
    """
    if request.method == "POST":
        ok, result = submit(form, service, **service_kwargs)
        if ok:
            messages.success(request, _text(success_message, result))
            return redirect(_text(success_url, result))
    return render(request, template, {"form": form, **(context or {})})


def delete_page(
    request,
    obj: Model,
    *,
    delete: Callable[[], Any],
    kind: str,
    success_message: str,
    success_url: str,
    cancel_url: str,
    consequences: str = "",
) -> HttpResponse:
    """GET: the confirmation page. POST: `delete()`, then the message and a redirect.

    A service's ValidationError, or rows that still refer to the object (ProtectedError: the
    API answers 409 for the same), are shown as a message on `cancel_url`; nothing changed.
    """
    if request.method == "POST":
        try:
            delete()
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect(cancel_url)
        except (ProtectedError, RestrictedError) as exc:
            messages.error(request, protected_message(exc))
            return redirect(cancel_url)
        messages.success(request, success_message)
        return redirect(success_url)
    return render(
        request,
        "portal/confirm_delete.html",
        {"object": obj, "kind": kind, "cancel_url": cancel_url, "consequences": consequences},
    )


class ChangeDeferred(Exception):
    """A write was accepted but not applied yet (a policy edit kept in the team's draft).

    Raised by the service instead of returning the object, so no caller can mistake the result for
    a saved change; `DeferredChangeMiddleware` and the API's exception handler answer it in one place.
    """

    def __init__(self, message: str, url: str):
        super().__init__(message)
        self.message = message
        self.url = url
