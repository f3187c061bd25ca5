"""The OpenID Connect redirect endpoints, under /sso/ (404 while single sign-on is not configured)."""

from django.urls import path

from portal.sso import views

app_name = "sso"

urlpatterns = [
    path("authenticate/", views.AuthenticationRequestView.as_view(), name="authenticate"),
    path("callback/", views.AuthenticationCallbackView.as_view(), name="callback"),
]
