"""REST API routes (under /api/v1/), one audience each: people at `sessions/…` (reviews, reads) and
enforcement clients at `gateway/sessions/…` (open, report, ship events, control, audit-check)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from audit.api import control, gateway, views
from audit.api.reviews import PolicyReviewViewSet
from audit.api.simulation import DraftSimulationView
from audit.api.sinks import AuditSinkViewSet

app_name = "audit-api"

router = SimpleRouter()
router.register("audit-sinks", AuditSinkViewSet, basename="audit-sink")  # audit/api/sinks.py
router.register("policy-reviews", PolicyReviewViewSet, basename="policy-review")  # audit/api/reviews.py

GATEWAY = "gateway/sessions/"

urlpatterns = [
    # --- enforcement clients (audit/api/gateway.py, audit/api/control.py) ---------------------
    path(GATEWAY, gateway.GatewaySessionsView.as_view(), name="gateway-sessions"),
    path(f"{GATEWAY}<uuid:session_id>/", gateway.GatewaySessionView.as_view(), name="gateway-session"),
    path(f"{GATEWAY}<uuid:session_id>/events/", gateway.GatewayEventsView.as_view(), name="gateway-events"),
    path(f"{GATEWAY}<uuid:session_id>/control/", control.session_control_view, name="gateway-control"),
    path(
        f"{GATEWAY}<uuid:session_id>/acknowledgement/",
        gateway.GatewayAcknowledgementView.as_view(),
        name="gateway-acknowledgement",
    ),
    # --- people (audit/api/views.py) ----------------------------------------------------------
    path("sessions/", views.SessionListView.as_view(), name="session-list"),
    path("sessions/<uuid:session_id>/", views.SessionDetailView.as_view(), name="session-detail"),
    path("sessions/<uuid:session_id>/events/", views.SessionEventsView.as_view(), name="session-events"),
    path(
        "sessions/<uuid:session_id>/acknowledgement/",
        views.SessionAcknowledgementView.as_view(),
        name="session-acknowledgement",
    ),
    path(
        "sessions/<uuid:session_id>/explanations/",
        views.SessionExplanationsView.as_view(),
        name="session-explanations",
    ),
    path("sessions/<uuid:session_id>/release/", views.SessionReleaseView.as_view(), name="session-release"),
    path("sessions/<uuid:session_id>/end/", views.SessionEndView.as_view(), name="session-end"),
    path(
        "sessions/<uuid:session_id>/approvals/",
        views.SessionApprovalsView.as_view(),
        name="session-approvals",
    ),
    path(  # audit/api/simulation.py: the draft lives in governance, the recorded calls here
        "policy-drafts/<int:pk>/simulation/", DraftSimulationView.as_view(), name="draft-simulation"
    ),
    *router.urls,
]
