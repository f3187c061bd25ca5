"""REST API routes (under /api/v1/)."""

app_name = "governance-api"

urlpatterns: list = []
