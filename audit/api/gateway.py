"""The gateway-facing audit API (`/api/v1/gateway/sessions/…`): enforcement clients open and report
sessions, ship events, ask whether a session was acknowledged; the control long poll is
audit/api/control.py. Only an enforcement-client bearer token gets in (request.auth is the
EnforcementClient); people use the people-facing set in audit/api/views.py. Every write calls an
audit service.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import APIView

from audit import services
from audit.api.serializers import (
    AcknowledgementBodySerializer,
    AgentSessionSerializer,
    EventBatchSerializer,
    IngestResultSerializer,
    SessionOpenSerializer,
    SessionStateSerializer,
    session_acknowledgement_body,
    valid,
)
from audit.choices import ErrorCode, SessionState
from audit.hashing import loads
from audit.models import AgentSession
from governance.api.authentication import (
    ClientDeliveryAuthentication,
    ClientTokenAuthentication,
    IsEnforcementClient,
)
from governance.models import EnforcementClient
from portal.errors import ServiceError

# A batch of 1,000 events with (truncated) result payloads; larger bodies are refused unread.
MAX_EVENTS_BODY_BYTES = 64 * 1024 * 1024
REVOKED = {"detail": "This enforcement-client token has been revoked.", "code": "token_revoked"}


def body_too_large(content_length: str | None) -> bool:
    """Whether a declared Content-Length is over MAX_EVENTS_BODY_BYTES (such a body is refused unread)."""
    length = content_length or "0"
    return length.isdigit() and int(length) > MAX_EVENTS_BODY_BYTES


def batch_events(raw: bytes) -> Any:
    """The `events` of a batch body (`{"events": [...]}`), or ServiceError (400) saying why not.

    Also called by the batch route in front of Django (audit/api/events_route.py)."""
    try:
        body = loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServiceError(f"The body is not valid JSON ({exc}).", field="") from None
    if not isinstance(body, dict) or "events" not in body:
        raise ServiceError('events: the body must be {"events": [...]}.', field="events")
    return body["events"]


class GatewayAPIView(APIView):
    authentication_classes = [ClientTokenAuthentication]
    permission_classes = [IsEnforcementClient]

    @property
    def client(self) -> EnforcementClient:
        return self.request.auth

    def session(self, session_id) -> AgentSession:
        """The session, if it is this client's team's and environment's (else 404)."""
        session = (
            AgentSession.objects.select_related("team", "environment")
            .filter(pk=session_id, team_id=self.client.team_id, environment_id=self.client.environment_id)
            .first()
        )
        if session is None:
            raise exceptions.NotFound("No such session for this enforcement client.")
        return session

    def require_live_or_delivering(self, session_id) -> EnforcementClient:
        """A live client, or a revoked one delivering for a session the portal opened before the revocation."""
        client = self.client
        if client.revoked_at is not None:
            opened_before = AgentSession.objects.filter(
                pk=session_id, client=client, created_at__lt=client.revoked_at
            ).exists()
            if not opened_before:
                raise exceptions.AuthenticationFailed(REVOKED)
        return client


class GatewaySessionsView(GatewayAPIView):
    """POST: a gateway opens a session (200 when it was already open)."""

    @extend_schema(
        request=SessionOpenSerializer,
        responses={200: AgentSessionSerializer, 201: AgentSessionSerializer},
        summary="Open a session (200 when it was already open)",
    )
    def post(self, request):
        data = valid(SessionOpenSerializer, request.data)
        session, created = services.session_open(client=self.client, **data)
        return Response(
            AgentSessionSerializer(self.session(session.pk)).data,
            status=status.HTTP_201_CREATED if created else 200,
        )


class GatewaySessionView(GatewayAPIView):
    """GET: the session resource. PATCH: the gateway reports a state change."""

    authentication_classes = [ClientDeliveryAuthentication]

    @extend_schema(responses=AgentSessionSerializer, summary="The session resource")
    def get(self, request, session_id):
        if self.client.revoked_at is not None:
            raise exceptions.AuthenticationFailed(REVOKED)
        return Response(AgentSessionSerializer(self.session(session_id)).data)

    @extend_schema(
        request=SessionStateSerializer, responses=AgentSessionSerializer, summary="Report a state change"
    )
    def patch(self, request, session_id):
        client = self.require_live_or_delivering(session_id)
        data = valid(SessionStateSerializer, request.data)
        if client.revoked_at is not None and data["state"] != SessionState.ENDED:
            # A revoked client may only close what it had opened: report the end, nothing else.
            raise exceptions.AuthenticationFailed(REVOKED)
        session = services.session_report_state(client=client, session_id=session_id, **data)
        return Response(AgentSessionSerializer(self.session(session.pk)).data)


class GatewayEventsView(GatewayAPIView):
    """POST: a gateway ships a batch of events (a revoked client still delivers what it recorded)."""

    authentication_classes = [ClientDeliveryAuthentication]

    @extend_schema(
        request=EventBatchSerializer, responses=IngestResultSerializer, summary="Ship a batch of events"
    )
    def post(self, request, session_id):
        client = self.require_live_or_delivering(session_id)
        if body_too_large(request.META.get("CONTENT_LENGTH")):
            raise ServiceError("The request body is too large.", ErrorCode.BATCH_TOO_LARGE, status=413)
        django_request = request._request
        raw = django_request.body if hasattr(django_request, "_body") else django_request.read()
        result = services.events_ingest(session_id=session_id, client=client, events=batch_events(raw))
        return Response(result.as_dict())


class GatewayAcknowledgementView(GatewayAPIView):
    """GET: has a reviewer acknowledged the session (`mcpgov audit-check`)."""

    @extend_schema(responses=AcknowledgementBodySerializer, summary="Is the session acknowledged?")
    def get(self, request, session_id):
        session = self.session(session_id)
        return Response(session_acknowledgement_body(session))
