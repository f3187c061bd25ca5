"""REST API routes (under /api/v1/)."""

app_name = "governance-api"

urlpatterns: list = []

# Production-access requests (people, session auth).
from rest_framework.routers import SimpleRouter  # noqa: E402

from governance.api.access import AccessRequestViewSet  # noqa: E402

_access_router = SimpleRouter()
_access_router.register("access-requests", AccessRequestViewSet, basename="access-request")
urlpatterns += _access_router.urls
