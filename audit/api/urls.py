"""REST API routes (under /api/v1/)."""

app_name = "audit-api"

urlpatterns: list = []
