"""Unleash client API routes (under /api/client/)."""

from django.urls import path

from governance.unleash import views

app_name = "unleash"

urlpatterns = [
    path("features", views.FeaturesView.as_view(), name="features"),
    path("features/", views.FeaturesView.as_view()),
    path("register", views.RegisterView.as_view(), name="register"),
    path("metrics", views.MetricsView.as_view(), name="metrics"),
    path("streaming", views.streaming, name="streaming"),
]
