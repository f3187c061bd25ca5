"""Incident pages (incidents/views.py)."""

from django.urls import path

from incidents import views

app_name = "incidents"

urlpatterns = [
    path("", views.incident_list, name="incident-list"),
    path("new/", views.incident_create, name="incident-create"),
    path("<int:pk>/", views.incident_detail, name="incident-detail"),
    path("<int:pk>/contain/", views.incident_contain, name="incident-contain"),
    path("<int:pk>/servers/", views.incident_add_servers, name="incident-add-servers"),
    path("<int:pk>/sessions/", views.incident_link_session, name="incident-link-session"),
    path("<int:pk>/root-cause/", views.incident_root_cause, name="incident-root-cause"),
    path("<int:pk>/notes/", views.incident_note, name="incident-note"),
    path("<int:pk>/resolve/", views.incident_resolve, name="incident-resolve"),
]
