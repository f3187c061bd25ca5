"""The one exception audit services raise for a broken rule; the API maps it to its status and body."""

from __future__ import annotations

from typing import Any

from audit.choices import ErrorCode


class AuditError(Exception):
    """A rule refused the request. `code` is an ErrorCode; `status` the HTTP status the API answers."""

    status = 400

    def __init__(
        self, message: str, code: str = ErrorCode.INVALID, *, status: int | None = None, **extra: Any
    ):
        super().__init__(message)
        self.message = message
        self.code = str(code)
        if status is not None:
            self.status = status
        self.extra = extra

    def as_body(self) -> dict[str, Any]:
        return {"detail": self.message, "code": self.code, **self.extra}


class AuditConflict(AuditError):
    status = 409


class AuditNotFound(AuditError):
    status = 404

    def __init__(self, message: str = "No such session.", **extra: Any):
        super().__init__(message, ErrorCode.NOT_FOUND, **extra)
