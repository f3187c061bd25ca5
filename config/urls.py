"""Root URLconf: the web UI, the REST API under /api/v1/, and the Django admin."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.views import dashboard
from portal import views
from portal.sso import views as sso_views

urlpatterns = [
    path("", dashboard, name="dashboard"),
    path("login/", sso_views.LoginView.as_view(), name="login"),
    path("logout/", sso_views.LogoutView.as_view(), name="logout"),
    path("sso/", include("portal.sso.urls")),
    path("team/switch/", views.team_switch, name="team-switch"),
    path("team/members/", views.member_list, name="members"),
    path("team/members/add/", views.member_add, name="member-add"),
    path("team/members/<int:pk>/edit/", views.member_edit, name="member-edit"),
    path("team/members/<int:pk>/remove/", views.member_remove, name="member-remove"),
    path("governance/", include("governance.urls")),
    path("audit/", include("audit.urls")),
    path("incidents/", include("incidents.urls")),
    # REST API
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/v1/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/", include("governance.api.urls")),
    path("api/v1/", include("audit.api.urls")),
    path("api/client/", include("governance.unleash.urls")),
    path("admin/", admin.site.urls),
]
