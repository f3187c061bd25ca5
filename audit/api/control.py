"""The control long poll: `GET /api/v1/sessions/<id>/control/?since=&wait=` (async, served by uvicorn).

Answers at once when the session's control_version is above `since`, else when a person's
decision bumps it (woken through portal.realtime within a second, across processes via
Redis), else after `wait` seconds. Holds no thread and no database connection while
waiting; the client's revocation wakes it too, and it answers 401 at once.
"""

from __future__ import annotations

from django.http import JsonResponse

from audit.choices import ErrorCode
from audit.models import AgentSession
from audit.services.sessions import control_channel, session_control, session_seen
from governance.api.authentication import client_from_authorization
from governance.services.clients import CLIENT_ACTIVE, TokenError, client_channel
from portal import realtime
from portal.db import db_call
from portal.errors import ServiceError, error_response

MAX_WAIT = 30.0


def _error(status: int, detail: str, code: str) -> JsonResponse:
    return error_response(ServiceError(detail, code, status=status))


def _read(client, session_id, since: int) -> tuple[AgentSession | None, dict | None]:
    """(session, answer): the answer only once control_version is above `since` (one thread hop)."""
    session = AgentSession.objects.filter(
        pk=session_id, team_id=client.team_id, environment_id=client.environment_id
    ).first()
    if session is not None:
        session_seen(session=session)
    if session is None or session.control_version <= since:
        return session, None
    return session, session_control(session=session, since=since)


async def session_control_view(request, session_id):
    if request.method != "GET":
        return _error(405, f"Method {request.method} not allowed.", "method_not_allowed")
    header = request.headers.get("Authorization", "")
    try:
        client = await db_call(client_from_authorization, header)
    except TokenError as exc:
        return error_response(exc)
    try:
        since = int(request.GET.get("since", "0"))
        wait = float(request.GET.get("wait", "0"))
    except ValueError:
        return _error(400, "since must be an integer and wait a number of seconds.", ErrorCode.INVALID)
    if since < 0 or not 0 <= wait <= MAX_WAIT:
        return _error(
            400, f"since must be >= 0 and wait between 0 and {MAX_WAIT:g} seconds.", ErrorCode.INVALID
        )
    session, body = await db_call(_read, client, session_id, since)
    if session is None:
        return _error(404, "No such session for this enforcement client.", ErrorCode.NOT_FOUND)
    if body is None and wait > 0:
        try:  # a person's decision (or the client's revocation) wakes the poll
            session, body = await realtime.long_poll(
                control_channel(session.pk),
                read=lambda: db_call(_reread, header, session_id, since),
                ready=lambda state: state[0] is None or state[1] is not None,
                token=lambda state: state[0].control_version,
                timeout=wait,
                also={client_channel(client.pk): CLIENT_ACTIVE},
            )
        except TokenError as exc:  # revoked (or expired) while waiting
            return error_response(exc)
        if session is None:
            return _error(404, "No such session for this enforcement client.", ErrorCode.NOT_FOUND)
    if body is None:
        body = await db_call(session_control, session=session, since=since)
    return JsonResponse(body)


def _reread(header: str, session_id, since: int) -> tuple[AgentSession | None, dict | None]:
    """The client checked again (it may have been revoked meanwhile), then `_read`: one thread hop."""
    return _read(client_from_authorization(header), session_id, since)
