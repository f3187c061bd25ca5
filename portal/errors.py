"""The one application error: a rule refused the request, with a code, the field it is about and a status.

Every app's services raise it (or a subclass naming the status); the DRF exception handler
(`portal.api.exception_handler`) turns it into the API's `{"detail", "code", ...}` body, and the
page toolkit (`portal.pages.submit`, `portal.pages.run_action`) into a form or page error;
`error_response` serves the async views outside DRF.
"""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse


class ServiceError(Exception):
    """A rule refused the request; nothing was written.

    `code` is machine-readable (an enum value of the app's `choices.py`); `field` names the input
    at fault (or None); `status` is the HTTP status the API answers; `extra` goes into the body."""

    status = 400
    default_code = "invalid"

    def __init__(
        self,
        message: str,
        code: str | None = None,
        *,
        field: str | None = None,
        status: int | None = None,
        **extra: Any,
    ):
        super().__init__(message)
        self.message = message
        self.code = str(code or self.default_code)
        self.field = field
        if status is not None:
            self.status = status
        self.extra = extra

    def as_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.message, "code": self.code}
        if self.field is not None:
            body["field"] = self.field
        return {**body, **self.extra}

    def page_message(self) -> str:
        """The sentence a page shows (the API's detail unless a subclass adds what a person needs)."""
        return self.message


def error_response(exc: ServiceError) -> JsonResponse:
    """The API body of `exc` for the views that run outside DRF (the async long polls)."""
    response = JsonResponse(exc.as_body(), status=exc.status)
    if exc.status == 401:
        response["WWW-Authenticate"] = "Bearer"
    return response


class NotFound(ServiceError):
    status = 404
    default_code = "not_found"


class Conflict(ServiceError):
    """The request is well formed but the object's state refuses it."""

    status = 409
    default_code = "conflict"


class Unauthenticated(ServiceError):
    status = 401
    default_code = "not_authenticated"


class UpstreamFailed(ServiceError):
    """A server the portal asked on the user's behalf did not answer as it should."""

    status = 502
    default_code = "upstream_failed"
