"""Root URLconf: the web UI, the REST API under /api/v1/, and the Django admin."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from portal import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("team/switch/", views.team_switch, name="team-switch"),
    path("governance/", include("governance.urls")),
    path("admin/", admin.site.urls),
]
