"""The OpenID Connect authentication backend: mozilla-django-oidc's code flow, with the provider's
endpoints from discovery, the ID token's audience and issuer checked, and users found or created
by portal.sso.services (matched on issuer + subject, never on an email alone)."""

from __future__ import annotations

import logging

import jwt
import requests
from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousOperation
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from portal.sso import conf
from portal.sso.services import SsoLoginRefused, sso_login

logger = logging.getLogger(__name__)

# Protocol claims of the ID token that are not facts about the person.
_PROTOCOL_CLAIMS = {
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "auth_time",
    "azp",
    "sid",
    "acr",
    "amr",
}


class _LazySetting:
    """Read a setting when used, not when Django builds the backend for every request's session."""

    def __init__(self, name: str, *default):
        self.name, self.default = name, default

    def __get__(self, instance, owner):
        return conf.setting(self.name, *self.default)


class SsoBackend(OIDCAuthenticationBackend):
    OIDC_OP_TOKEN_ENDPOINT = _LazySetting("OIDC_OP_TOKEN_ENDPOINT")
    OIDC_OP_USER_ENDPOINT = _LazySetting("OIDC_OP_USER_ENDPOINT", None)
    OIDC_OP_JWKS_ENDPOINT = _LazySetting("OIDC_OP_JWKS_ENDPOINT", None)
    OIDC_RP_CLIENT_ID = _LazySetting("OIDC_RP_CLIENT_ID")
    OIDC_RP_CLIENT_SECRET = _LazySetting("OIDC_RP_CLIENT_SECRET")
    OIDC_RP_SIGN_ALGO = _LazySetting("OIDC_RP_SIGN_ALGO", "RS256")
    OIDC_RP_IDP_SIGN_KEY = _LazySetting("OIDC_RP_IDP_SIGN_KEY", None)

    def __init__(self, *args, **kwargs):  # the parent reads (and discovers) every endpoint here
        self.UserModel = get_user_model()

    @staticmethod
    def get_settings(attr, *args):
        return conf.setting(attr, *args)

    def authenticate(self, request, **kwargs):
        # Only the callback view, which passes the session's nonce and PKCE verifier: a password
        # login must never make this backend redeem a `code` found in the query string.
        if "nonce" not in kwargs or "code_verifier" not in kwargs:
            return None
        try:
            return super().authenticate(request, **kwargs)
        except (SuspiciousOperation, requests.RequestException, conf.ProviderUnavailable) as exc:
            # A bad signature, audience, issuer, nonce or token answer: no login, and the page says so.
            logger.warning("SSO login refused: %s", exc)
            request.sso_error = "The identity provider's answer could not be verified; you are not logged in."
            return None

    def retrieve_matching_jwk(self, token):
        if self.OIDC_OP_JWKS_ENDPOINT is None:
            raise SuspiciousOperation("No JWKS endpoint: the ID token's signature cannot be verified.")
        return super().retrieve_matching_jwk(token)

    def _verify_jws(self, payload, key):
        """The signature (the parent) plus what it leaves out: audience, issuer, expiry."""
        header = jwt.get_unverified_header(payload)
        if header.get("alg") != self.OIDC_RP_SIGN_ALGO:
            raise SuspiciousOperation(
                f"ID token signed with {header.get('alg')!r}, not {self.OIDC_RP_SIGN_ALGO!r}."
            )
        issuer = conf.setting("OIDC_ISSUER", None)
        try:
            return jwt.decode(
                payload,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=issuer,
                options={"require": ["exp", "iat", "sub", "aud", "iss"], "verify_iss": issuer is not None},
                leeway=60,
            )
        except jwt.PyJWTError as exc:
            raise SuspiciousOperation(f"ID token rejected: {exc}") from exc

    def get_userinfo(self, access_token, id_token, payload):
        """The ID token's claims, completed from the userinfo endpoint (whose `sub` must agree)."""
        claims = {k: v for k, v in payload.items() if k not in _PROTOCOL_CLAIMS}
        if self.OIDC_OP_USER_ENDPOINT:
            info = super().get_userinfo(access_token, id_token, payload)
            if info.get("sub") != payload["sub"]:
                raise SuspiciousOperation("The userinfo endpoint answered for another subject.")
            claims.update(info)
        claims["iss"], claims["sub"] = payload["iss"], payload["sub"]
        return claims

    def get_or_create_user(self, access_token, id_token, payload):
        claims = self.get_userinfo(access_token, id_token, payload)
        try:
            user, result = sso_login(claims=claims)
        except SsoLoginRefused as exc:
            logger.warning("SSO login of %s refused: %s", payload.get("sub"), exc)
            self.request.sso_error = str(exc)
            return None
        self.request.sso_sync = result
        return user
