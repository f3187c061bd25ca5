"""Root URLconf: the web UI, the REST API under /api/v1/, and the Django admin."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from config.views import dashboard, inbox, inbox_read, needs_poll, search_view, site_teams, team_webhook
from governance.oauth import oauth_metadata
from portal import views
from portal.api import api_not_found
from portal.metrics import metrics_view
from portal.sso import views as sso_views

urlpatterns = [
    path("", dashboard, name="dashboard"),
    path("needs/", needs_poll, name="needs-poll"),
    path("inbox/", inbox, name="inbox"),
    path("search/", search_view, name="search"),
    path("inbox/read/", inbox_read, name="inbox-read"),
    path("team/webhook/", team_webhook, name="team-webhook"),
    path("login/", sso_views.LoginView.as_view(), name="login"),
    path("logout/", sso_views.LogoutView.as_view(), name="logout"),
    path("sso/", include("portal.sso.urls")),
    path("team/switch/", views.team_switch, name="team-switch"),
    path("team/members/", views.member_list, name="members"),
    path("team/members/invite/", views.member_invite, name="member-invite"),
    path("team/invitations/<int:pk>/revoke/", views.invitation_revoke, name="invitation-revoke"),
    path("invitation/<str:token>/", views.invitation, name="invitation"),
    path("site/teams/", site_teams, name="site-teams"),
    path("team/members/<int:pk>/edit/", views.member_edit, name="member-edit"),
    path("team/members/<int:pk>/remove/", views.member_remove, name="member-remove"),
    path("oauth/", include("governance.oauth_urls")),
    path(".well-known/oauth-authorization-server", oauth_metadata, name="oauth-metadata"),
    path("governance/", include("governance.urls")),
    path("audit/", include("audit.urls")),
    path("incidents/", include("incidents.urls")),
    # REST API
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/v1/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/", include("governance.api.urls")),
    path("api/v1/", include("audit.api.urls")),
    path("api/client/", include("governance.unleash.urls")),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),  # Prometheus (portal.metrics): loopback or a bearer token
    path("healthz", views.healthz, name="healthz"),  # liveness/readiness for load balancers and k8s
    re_path(r"^api/", api_not_found),  # an unknown API path is a JSON 404, like every API error
]
