"""/oauth/: authorize, token and revocation endpoints of django-oauth-toolkit (docs/enforcer-api.md)."""

from django.urls import path
from oauth2_provider import views

app_name = "oauth2_provider"  # DOT's metadata view reverses its endpoints in this namespace

urlpatterns = [
    path("authorize/", views.AuthorizationView.as_view(), name="authorize"),
    path("token/", views.TokenView.as_view(), name="token"),
    path("revoke_token/", views.RevokeTokenView.as_view(), name="revoke-token"),
]
