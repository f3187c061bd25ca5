"""REST API routes (under /api/v1/): policy CRUD for people, keys and the bundle for gateways."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from governance.api import views
from governance.api.access import AccessRequestViewSet
from governance.api.agents import AgentViewSet, ClientWhoamiView
from governance.api.bundle import bundle_view
from governance.api.drafts import PolicyDraftViewSet
from governance.api.flags import FlagViewSet
from governance.api.history import ChangeRecordViewSet
from governance.api.shadow import ShadowBundleView
from governance.api.tool_reports import ToolReportView

app_name = "governance-api"

router = SimpleRouter()
router.register("servers", views.ServerViewSet, basename="server")
router.register("tools", views.ToolViewSet, basename="tool")
router.register("roles", views.RoleViewSet, basename="role")
router.register("environments", views.EnvironmentViewSet, basename="environment")
router.register("bindings", views.BindingViewSet, basename="binding")
router.register("server-limits", views.ServerRateLimitViewSet, basename="server-limit")
router.register("global-limits", views.GlobalRateLimitViewSet, basename="global-limit")
router.register("trigger-settings", views.TriggerSettingsViewSet, basename="trigger-settings")
# Production-access requests (people, session auth) — governance/api/access.py.
router.register("access-requests", AccessRequestViewSet, basename="access-request")
router.register("agents", AgentViewSet, basename="agent")
router.register("changes", ChangeRecordViewSet, basename="change")  # the change history (read-only)
router.register("flags", FlagViewSet, basename="flag")
router.register("policy-drafts", PolicyDraftViewSet, basename="policy-draft")  # governance/api/drafts.py
router.register("team-policy-settings", views.TeamPolicySettingsViewSet, basename="team-policy-settings")

urlpatterns = [
    path("keys/", views.KeysView.as_view(), name="keys"),
    path("bundle/", bundle_view, name="bundle"),
    path("bundle/shadow/", ShadowBundleView.as_view(), name="bundle-shadow"),  # governance/api/shadow.py
    path("client/", ClientWhoamiView.as_view(), name="client-whoami"),
    path("policy/diff/", views.PolicyDiffView.as_view(), name="policy-diff"),
    path("tool-reports/", ToolReportView.as_view(), name="tool-reports"),
    *router.urls,
]
