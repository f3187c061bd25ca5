"""Audit API views: gateways open and report sessions and ship events; reviewers read and decide.

Enforcement clients authenticate with their bearer token (request.auth is the
EnforcementClient); people with their portal session. Every write calls an audit service.
The control long poll is an async view in audit/api/control.py.
"""

from __future__ import annotations

from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema
from rest_framework import exceptions, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from audit import services
from audit.api.schema import EventPagination
from audit.api.serializers import (
    AcknowledgementBodySerializer,
    AcknowledgementNoteSerializer,
    AgentSessionSerializer,
    ApprovalInputSerializer,
    AuditEventSerializer,
    DecisionReasonSerializer,
    DecisionSerializer,
    EventBatchSerializer,
    ExplanationInputSerializer,
    ExplanationListSerializer,
    ExplanationSerializer,
    IngestResultSerializer,
    PendingApprovalsSerializer,
    ReleaseInputSerializer,
    ReviewSessionDetailSerializer,
    ReviewSessionSerializer,
    SessionDecisionResultSerializer,
    SessionOpenSerializer,
    SessionStateSerializer,
    acknowledgement_body,
)
from audit.choices import ErrorCode, SessionState
from audit.filtersets import EventFilterSet, SessionFilterSet
from audit.hashing import loads
from audit.models import Acknowledgement, AgentSession, AuditEvent, FailedCallExplanation, SessionDecision
from governance.api.authentication import ClientDeliveryAuthentication, ClientTokenAuthentication
from governance.models import EnforcementClient
from portal.api import Pagination
from portal.errors import ServiceError
from portal.filtersets import ListFilters
from portal.permissions import VIEW_PAYLOADS, has_team_perm

# A batch of 1,000 events with (truncated) result payloads; larger bodies are refused unread.
MAX_EVENTS_BODY_BYTES = 64 * 1024 * 1024


class AuditAPIView(APIView):
    authentication_classes = [ClientTokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]

    # --- who is calling ----------------------------------------------------------------------
    def client(self) -> EnforcementClient | None:
        return self.request.auth if isinstance(self.request.auth, EnforcementClient) else None

    def require_client(self) -> EnforcementClient:
        client = self.client()
        if client is None:
            raise exceptions.PermissionDenied(
                "This endpoint needs an enforcement-client token (Authorization: Bearer …)."
            )
        return client

    def require_person(self) -> None:
        if self.client() is not None:
            raise exceptions.PermissionDenied("Enforcement clients cannot use this endpoint.")

    # --- which session -----------------------------------------------------------------------
    def session_for_person(self, session_id) -> AgentSession:
        session = (
            AgentSession.objects.restrict(self.request.user)
            .select_related("team", "environment", "client", "acknowledgement__reviewer")
            .filter(pk=session_id)
            .first()
        )
        if session is None:
            raise exceptions.NotFound("No such session.")
        return session

    def session_for_client(self, client: EnforcementClient, session_id) -> AgentSession:
        session = (
            AgentSession.objects.select_related("team", "environment")
            .filter(pk=session_id, team_id=client.team_id, environment_id=client.environment_id)
            .first()
        )
        if session is None:
            raise exceptions.NotFound("No such session for this enforcement client.")
        return session

    def require_delivering_client(self, session_id) -> EnforcementClient:
        """A live client, or a revoked one delivering for a session the portal opened before the revocation."""
        client = self.require_client()
        if client.revoked_at is not None:
            opened_before = AgentSession.objects.filter(
                pk=session_id, client=client, created_at__lt=client.revoked_at
            ).exists()
            if not opened_before:
                raise exceptions.AuthenticationFailed(
                    {"detail": "This enforcement-client token has been revoked.", "code": "token_revoked"}
                )
        return client

    def session(self, session_id) -> AgentSession:
        client = self.client()
        return self.session_for_client(client, session_id) if client else self.session_for_person(session_id)


def _valid(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class SessionListView(ListFilters, AuditAPIView):
    """GET: reviewers list their teams' sessions (filters as query parameters). POST: a gateway opens one."""

    pagination_class = Pagination  # (documents the paginated list; get() pages by hand)
    queryset = AgentSession.objects.none()  # (names the model for the schema's filter parameters)
    filterset_class = SessionFilterSet

    @extend_schema(
        responses=ReviewSessionSerializer(many=True),
        summary="Sessions of the person's teams",
    )
    def get(self, request):
        self.require_person()
        qs = self.filtered(AgentSession.objects.restrict(request.user))
        paginator = Pagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(ReviewSessionSerializer(page, many=True).data)

    @extend_schema(
        request=SessionOpenSerializer,
        responses={200: AgentSessionSerializer, 201: AgentSessionSerializer},
        summary="Open a session (gateway; 200 when it was already open)",
    )
    def post(self, request):
        client = self.require_client()
        data = _valid(SessionOpenSerializer, request.data)
        session, created = services.session_open(client=client, **data)
        session = self.session_for_client(client, session.pk)
        return Response(
            AgentSessionSerializer(session).data, status=status.HTTP_201_CREATED if created else 200
        )


class SessionDetailView(AuditAPIView):
    """GET: the session resource. PATCH: the gateway reports a state change."""

    authentication_classes = [ClientDeliveryAuthentication, SessionAuthentication]

    @extend_schema(
        responses=PolymorphicProxySerializer(
            component_name="SessionResource",
            serializers=[AgentSessionSerializer, ReviewSessionDetailSerializer],
            resource_type_field_name=None,
        ),
        summary="The session resource (gateways: AgentSession; people: with review fields and decisions)",
    )
    def get(self, request, session_id):
        client = self.client()
        if client is not None and client.revoked_at is not None:
            raise exceptions.AuthenticationFailed(
                {"detail": "This enforcement-client token has been revoked.", "code": "token_revoked"}
            )
        session = self.session(session_id)
        if self.client():
            return Response(AgentSessionSerializer(session).data)
        data = ReviewSessionSerializer(session).data
        data["decisions"] = DecisionSerializer(
            SessionDecision.objects.filter(session=session).select_related("decided_by"), many=True
        ).data
        return Response(data)

    @extend_schema(
        request=SessionStateSerializer,
        responses=AgentSessionSerializer,
        summary="Report a state change (gateway)",
    )
    def patch(self, request, session_id):
        client = self.require_delivering_client(session_id)
        data = _valid(SessionStateSerializer, request.data)
        if client.revoked_at is not None and data["state"] != SessionState.ENDED:
            # A revoked client may only close what it had opened: report the end, nothing else.
            raise exceptions.AuthenticationFailed(
                {"detail": "This enforcement-client token has been revoked.", "code": "token_revoked"}
            )
        session = services.session_report_state(client=client, session_id=session_id, **data)
        return Response(AgentSessionSerializer(self.session_for_client(client, session.pk)).data)


class SessionEventsView(ListFilters, AuditAPIView):
    """POST: a gateway ships a batch of events. GET: reviewers page through a session's events."""

    pagination_class = EventPagination
    queryset = AuditEvent.objects.none()  # (names the model for the schema's filter parameters)
    filterset_class = EventFilterSet
    authentication_classes = [ClientDeliveryAuthentication, SessionAuthentication]

    @extend_schema(
        responses=AuditEventSerializer(many=True),
        summary="A session's events (payloads for auditors)",
    )
    def get(self, request, session_id):
        self.require_person()
        session = self.session_for_person(session_id)
        qs = self.filtered(AuditEvent.objects.filter(session=session).order_by("seq"))
        include_payloads = has_team_perm(request.user, VIEW_PAYLOADS, session.team)
        paginator = Pagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        data = AuditEventSerializer(page, many=True, context={"include_payloads": include_payloads}).data
        response = paginator.get_paginated_response(data)
        response.data["payloads_visible"] = include_payloads
        return response

    @extend_schema(
        request=EventBatchSerializer,
        responses=IngestResultSerializer,
        summary="Ship a batch of events (gateway)",
    )
    def post(self, request, session_id):
        client = self.require_delivering_client(session_id)
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > MAX_EVENTS_BODY_BYTES:
            raise ServiceError("The request body is too large.", ErrorCode.BATCH_TOO_LARGE, status=413)
        try:
            django_request = request._request
            raw = django_request.body if hasattr(django_request, "_body") else django_request.read()
            body = loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ServiceError(f"The body is not valid JSON ({exc}).", field="") from None
        if not isinstance(body, dict) or "events" not in body:
            raise ServiceError('events: the body must be {"events": [...]}.', field="events")
        result = services.events_ingest(session_id=session_id, client=client, events=body["events"])
        return Response(result.as_dict())


class SessionAcknowledgementView(AuditAPIView):
    """GET: is the session acknowledged (gateways and people). POST: a reviewer acknowledges it."""

    @extend_schema(responses=AcknowledgementBodySerializer, summary="Is the session acknowledged?")
    def get(self, request, session_id):
        session = self.session(session_id)
        ack = Acknowledgement.objects.filter(session=session).select_related("reviewer").first()
        return Response(acknowledgement_body(ack))

    @extend_schema(
        request=AcknowledgementNoteSerializer,
        responses=AcknowledgementBodySerializer,
        summary="Acknowledge the log",
    )
    def post(self, request, session_id):
        self.require_person()
        session = self.session_for_person(session_id)
        data = _valid(AcknowledgementNoteSerializer, request.data)
        ack = services.session_acknowledge(session=session, reviewer=request.user, note=data["note"])
        return Response(acknowledgement_body(ack), status=status.HTTP_201_CREATED)


class SessionExplanationsView(AuditAPIView):
    """GET: explanations and unexplained failed calls. POST: explain one failed call."""

    @extend_schema(responses=ExplanationListSerializer, summary="Explanations of failed calls")
    def get(self, request, session_id):
        self.require_person()
        session = self.session_for_person(session_id)
        items = FailedCallExplanation.objects.filter(session=session).select_related("author")
        return Response(
            {
                "explanations": ExplanationSerializer(items, many=True).data,
                "unexplained": services.unexplained_failed_calls(session),
            }
        )

    @extend_schema(
        request=ExplanationInputSerializer, responses=ExplanationSerializer, summary="Explain a failed call"
    )
    def post(self, request, session_id):
        self.require_person()
        session = self.session_for_person(session_id)
        data = _valid(ExplanationInputSerializer, request.data)
        item = services.failed_call_explain(session=session, reviewer=request.user, **data)
        return Response(ExplanationSerializer(item).data, status=status.HTTP_201_CREATED)


class SessionReleaseView(AuditAPIView):
    """POST {"reason", "confirm_flag_off"?}: allow a halted or paused session to continue."""

    service = staticmethod(services.session_release)
    input_serializer = ReleaseInputSerializer

    @extend_schema(
        request=ReleaseInputSerializer,
        responses=SessionDecisionResultSerializer,
        summary="Allow a halted or paused session to continue",
    )
    def post(self, request, session_id):
        return self.decide(request, session_id)

    def decide(self, request, session_id):
        self.require_person()
        session = self.session_for_person(session_id)
        data = _valid(self.input_serializer, request.data)
        extra = {"flag_off_confirmed": data["confirm_flag_off"]} if "confirm_flag_off" in data else {}
        decision = self.service(session=session, reviewer=request.user, reason=data["reason"], **extra)
        session = self.session_for_person(session_id)
        return Response(
            {"session": ReviewSessionSerializer(session).data, "decision": DecisionSerializer(decision).data}
        )


class SessionEndView(SessionReleaseView):
    """POST {"reason"}: end the session."""

    service = staticmethod(services.session_end)
    input_serializer = DecisionReasonSerializer

    @extend_schema(
        request=DecisionReasonSerializer,
        responses=SessionDecisionResultSerializer,
        summary="End the session (halted, paused or running)",
    )
    def post(self, request, session_id):
        return self.decide(request, session_id)


class SessionApprovalsView(AuditAPIView):
    """GET: calls waiting for approval. POST {"call_id", "decision": approve|deny, "reason"}."""

    @extend_schema(responses=PendingApprovalsSerializer, summary="Calls waiting for approval")
    def get(self, request, session_id):
        self.require_person()
        session = self.session_for_person(session_id)
        return Response({"pending": session.pending_approvals})

    @extend_schema(
        request=ApprovalInputSerializer, responses=DecisionSerializer, summary="Approve or deny a call"
    )
    def post(self, request, session_id):
        self.require_person()
        session = self.session_for_person(session_id)
        data = _valid(ApprovalInputSerializer, request.data)
        decision = services.call_approval_decide(session=session, reviewer=request.user, **data)
        return Response(DecisionSerializer(decision).data, status=status.HTTP_201_CREATED)
