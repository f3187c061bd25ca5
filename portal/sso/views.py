"""Login, logout and the OpenID Connect redirect endpoints.

The login page offers "Sign in with <provider>" when SSO is configured, and the password form
unless MCPGOV_LOCAL_LOGIN=0 (then a password POST is refused too). Logout ends the provider's
session as well (RP-initiated logout) when the provider advertises an end_session_endpoint.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from mozilla_django_oidc import views as oidc_views
from mozilla_django_oidc.utils import absolutify

from portal.sso import conf

logger = logging.getLogger(__name__)

ID_TOKEN_SESSION_KEY = "oidc_id_token"  # noqa: S105 (a session key name) mozilla-django-oidc stores it there (OIDC_STORE_ID_TOKEN)


class LoginView(auth_views.LoginView):
    def dispatch(self, request, *args, **kwargs):
        if request.method == "POST" and not settings.MCPGOV_LOCAL_LOGIN:
            return self.render_to_response(self.get_context_data(local_login_refused=True), status=403)
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        return super().get_context_data(
            sso_enabled=conf.enabled(),
            sso_provider_name=settings.OIDC_PROVIDER_NAME,
            local_login=settings.MCPGOV_LOCAL_LOGIN,
            **kwargs,
        )


def _provider_logout_url(request) -> str | None:
    id_token = request.session.get(ID_TOKEN_SESSION_KEY)
    if not conf.enabled() or not id_token:
        return None
    try:
        end_session = conf.setting("OIDC_OP_END_SESSION_ENDPOINT", None)
    except conf.ProviderUnavailable as exc:
        logger.warning("SSO logout: provider not reachable, local logout only: %s", exc)
        return None
    if not end_session:
        return None
    query = urlencode(
        {
            "id_token_hint": id_token,
            "client_id": settings.OIDC_RP_CLIENT_ID,
            "post_logout_redirect_uri": absolutify(request, reverse(settings.LOGOUT_REDIRECT_URL)),
        }
    )
    return f"{end_session}{'&' if '?' in end_session else '?'}{query}"


class LogoutView(auth_views.LogoutView):
    """Logs out here, then sends the browser on to the provider's end-session endpoint.

    Not with a redirect: browsers apply the page's CSP `form-action 'self'` to the redirect that
    follows the logout form post, which would stop it at the portal. A page that navigates on
    (meta refresh, and a link for browsers without it) is not a form action.
    """

    def post(self, request, *args, **kwargs):
        provider_url = _provider_logout_url(request)  # before logout flushes the session
        response = super().post(request, *args, **kwargs)
        if not provider_url:
            return response
        return render(
            request,
            "registration/sso_logout.html",
            {"provider_url": provider_url, "sso_provider_name": settings.OIDC_PROVIDER_NAME},
        )


class _SsoOnly:
    def dispatch(self, request, *args, **kwargs):
        if not conf.enabled():
            raise Http404("Single sign-on is not configured.")
        return super().dispatch(request, *args, **kwargs)

    @staticmethod
    def get_settings(attr, *args):
        return conf.setting(attr, *args)


class AuthenticationRequestView(_SsoOnly, oidc_views.OIDCAuthenticationRequestView):
    """Redirect to the provider with state, nonce and a PKCE challenge (kept in the session)."""

    def __init__(self, *args, **kwargs):  # the parent reads the endpoint here; read it per request
        super(oidc_views.OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)

    def get(self, request):
        try:
            self.OIDC_OP_AUTH_ENDPOINT = conf.setting("OIDC_OP_AUTHORIZATION_ENDPOINT")
        except conf.ProviderUnavailable as exc:
            logger.error("SSO: %s", exc)
            messages.error(request, "The identity provider cannot be reached; try again later.")
            return redirect("login")
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().get(request)


class AuthenticationCallbackView(_SsoOnly, oidc_views.OIDCAuthenticationCallbackView):
    """The provider's redirect back: state checked, code exchanged (with the PKCE verifier),
    ID token verified against the provider's JWKS, then portal.sso.services.sso_login."""

    def login_failure(self):
        messages.error(
            self.request,
            getattr(self.request, "sso_error", "") or "Single sign-on did not complete; please try again.",
        )
        return redirect("login")

    def login_success(self):
        response = super().login_success()
        result = getattr(self.request, "sso_sync", None)
        if result is not None and result.kept:
            messages.warning(
                self.request,
                "Your identity provider no longer grants you "
                + ", ".join(result.kept)
                + ", but you are the team's last admin there, so you keep it until another admin is named.",
            )
        return response
