"""Web UI routes for reviewers: sessions, halted sessions, exports."""

app_name = "audit"

urlpatterns: list = []
