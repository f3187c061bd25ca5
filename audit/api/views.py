"""The people-facing audit API (`/api/v1/sessions/…`): reviewers list and read sessions and their
events, acknowledge logs, explain failed calls, release, end, approve. Portal session only;
gateways use their own set (audit/api/gateway.py). Every write calls an audit service.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
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
    ApprovalInputSerializer,
    AuditEventSerializer,
    DecisionReasonSerializer,
    DecisionSerializer,
    ExplanationInputSerializer,
    ExplanationListSerializer,
    ExplanationSerializer,
    PendingApprovalsSerializer,
    ReleaseInputSerializer,
    ReviewSessionDetailSerializer,
    ReviewSessionSerializer,
    SessionDecisionResultSerializer,
    acknowledgement_body,
    session_acknowledgement_body,
    valid,
)
from audit.filtersets import EventFilterSet, SessionFilterSet
from audit.models import AgentSession, AuditEvent, FailedCallExplanation, SessionDecision
from portal.api import Pagination
from portal.filtersets import ListFilters
from portal.permissions import VIEW_PAYLOADS, has_team_perm


class AuditAPIView(APIView):
    """People only (their portal session): reviewers, auditors, viewers of the session's team."""

    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAuthenticated]

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


class SessionListView(ListFilters, AuditAPIView):
    """GET: reviewers list their teams' sessions (filters as query parameters)."""

    pagination_class = Pagination  # (documents the paginated list; get() pages by hand)
    queryset = AgentSession.objects.none()  # (names the model for the schema's filter parameters)
    filterset_class = SessionFilterSet

    @extend_schema(
        responses=ReviewSessionSerializer(many=True),
        summary="Sessions of the person's teams",
    )
    def get(self, request):
        qs = self.filtered(AgentSession.objects.restrict(request.user))
        paginator = Pagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(ReviewSessionSerializer(page, many=True).data)


class SessionDetailView(AuditAPIView):
    """GET: the session with its review fields and the decisions taken on it."""

    @extend_schema(
        responses=ReviewSessionDetailSerializer, summary="The session, with review fields and decisions"
    )
    def get(self, request, session_id):
        session = self.session_for_person(session_id)
        data = ReviewSessionSerializer(session).data
        data["decisions"] = DecisionSerializer(
            SessionDecision.objects.filter(session=session).select_related("decided_by"), many=True
        ).data
        return Response(data)


class SessionEventsView(ListFilters, AuditAPIView):
    """GET: reviewers page through a session's events (payloads for auditors)."""

    pagination_class = EventPagination
    queryset = AuditEvent.objects.none()  # (names the model for the schema's filter parameters)
    filterset_class = EventFilterSet

    @extend_schema(
        responses=AuditEventSerializer(many=True),
        summary="A session's events (payloads for auditors)",
    )
    def get(self, request, session_id):
        session = self.session_for_person(session_id)
        qs = self.filtered(AuditEvent.objects.filter(session=session).order_by("seq"))
        include_payloads = has_team_perm(request.user, VIEW_PAYLOADS, session.team)
        paginator = Pagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        data = AuditEventSerializer(page, many=True, context={"include_payloads": include_payloads}).data
        response = paginator.get_paginated_response(data)
        response.data["payloads_visible"] = include_payloads
        return response


class SessionAcknowledgementView(AuditAPIView):
    """GET: is the session acknowledged. POST: a reviewer acknowledges it."""

    @extend_schema(responses=AcknowledgementBodySerializer, summary="Is the session acknowledged?")
    def get(self, request, session_id):
        session = self.session_for_person(session_id)
        return Response(session_acknowledgement_body(session))

    @extend_schema(
        request=AcknowledgementNoteSerializer,
        responses={201: AcknowledgementBodySerializer},
        summary="Acknowledge the log",
    )
    def post(self, request, session_id):
        session = self.session_for_person(session_id)
        data = valid(AcknowledgementNoteSerializer, request.data)
        ack = services.session_acknowledge(session=session, reviewer=request.user, note=data["note"])
        return Response(acknowledgement_body(ack), status=status.HTTP_201_CREATED)


class SessionExplanationsView(AuditAPIView):
    """GET: explanations and unexplained failed calls. POST: explain one failed call."""

    @extend_schema(responses=ExplanationListSerializer, summary="Explanations of failed calls")
    def get(self, request, session_id):
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
        session = self.session_for_person(session_id)
        data = valid(ExplanationInputSerializer, request.data)
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
        session = self.session_for_person(session_id)
        data = valid(self.input_serializer, request.data)
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
        session = self.session_for_person(session_id)
        return Response({"pending": session.pending_approvals})

    @extend_schema(
        request=ApprovalInputSerializer, responses=DecisionSerializer, summary="Approve or deny a call"
    )
    def post(self, request, session_id):
        session = self.session_for_person(session_id)
        data = valid(ApprovalInputSerializer, request.data)
        decision = services.call_approval_decide(session=session, reviewer=request.user, **data)
        return Response(DecisionSerializer(decision).data, status=status.HTTP_201_CREATED)
