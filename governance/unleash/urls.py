"""Unleash client API routes (under /api/client/)."""

app_name = "unleash"

urlpatterns: list = []
