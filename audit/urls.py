"""Web UI routes for reviewers: sessions, halted sessions, exports."""

from django.urls import path

from audit import activity_views, review_views, shadow_views, simulation_views, sink_views, views

app_name = "audit"

urlpatterns = [
    path("sessions/", views.session_list, name="session-list"),
    path("sessions/export/", views.range_export, name="range-export"),
    path("sessions/<uuid:session_id>/", views.session_detail, name="session-detail"),
    path("sessions/<uuid:session_id>/acknowledge/", views.session_acknowledge, name="session-acknowledge"),
    path("sessions/<uuid:session_id>/explain/", views.session_explain, name="session-explain"),
    path("sessions/<uuid:session_id>/release/", views.session_release, name="session-release"),
    path("sessions/<uuid:session_id>/end/", views.session_end, name="session-end"),
    path("sessions/<uuid:session_id>/approval/", views.call_approval, name="call-approval"),
    path("sessions/<uuid:session_id>/export/", views.session_export, name="session-export"),
    path("halted/", views.halted_queue, name="halted-queue"),
    # Activity: charts, usage, gateways, cost (audit/activity_views.py)
    path("activity/", activity_views.activity_page, name="activity"),
    path("activity/cost.csv", activity_views.cost_csv, name="activity-cost-csv"),
    path("activity/COST_LOG.md", activity_views.cost_log, name="activity-cost-log"),
    path("simulation/", simulation_views.draft_simulation, name="draft-simulation"),
    path("shadow/", shadow_views.shadow_detail, name="shadow-detail"),
    # The quarterly allowlist review (audit/review_views.py)
    path("reviews/", review_views.review_list, name="review-list"),
    path("reviews/open/", review_views.review_open, name="review-open"),
    path("reviews/<int:pk>/", review_views.review_detail, name="review-detail"),
    path("reviews/<int:pk>/sign-off/", review_views.review_sign_off, name="review-sign-off"),
    path("reviews/suggestions/<int:pk>/accept/", review_views.suggestion_accept, name="suggestion-accept"),
    path("reviews/suggestions/<int:pk>/dismiss/", review_views.suggestion_dismiss, name="suggestion-dismiss"),
    # SIEM sinks (audit/sink_views.py)
    path("sinks/", sink_views.sink_list, name="sink-list"),
    path("sinks/new/", sink_views.sink_create_view, name="sink-create"),
    path("sinks/<int:pk>/edit/", sink_views.sink_edit_view, name="sink-edit"),
    path("sinks/<int:pk>/toggle/", sink_views.sink_toggle_view, name="sink-toggle"),
    path("sinks/<int:pk>/test/", sink_views.sink_test_view, name="sink-test"),
    path("sinks/<int:pk>/delete/", sink_views.sink_delete_view, name="sink-delete"),
]
