"""The portal as OAuth 2.1 authorization server for agents (django-oauth-toolkit, docs/enforcer-api.md).

Access tokens are RFC 9068 JWTs (`typ: at+jwt`) signed EdDSA with the team's active bundle key, so a
gateway verifies them offline with the keys it already pins. Only clients that belong to a live agent
get tokens; an interactive (authorization code) agent is usable only by members of its team.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

from django.conf import settings
from oauth2_provider.models import AccessToken, Application
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.views import AuthorizationView, OAuthServerMetadataView
from oauthlib.oauth2.rfc6749 import errors

from governance.models import Agent
from governance.services.signing import active_signer
from mcpgov.bundle import canonical_json
from mcpgov.verify import JWS_ALG, b64url_decode, b64url_encode
from portal.models import Membership

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - RFC 9068 media type, not a secret
SUBJECT_PREFIX = "agent:"


def issuer_for(origin: str) -> str:
    """`iss` of every token: MCPGOV_PORTAL_URL, else the origin the request came to."""
    return (settings.MCPGOV_PORTAL_URL or origin).rstrip("/")


def _live_agent(application) -> Agent | None:
    if application is None:
        return None
    agent = (
        Agent.objects.select_related("team")
        .prefetch_related("roles", "environments")
        .filter(application_id=application.pk, revoked_at__isnull=True)
        .first()
    )
    return agent


class AgentOAuth2Validator(OAuth2Validator):
    """DOT's validator, narrowed to clients of live agents and to members of the agent's team."""

    def _load_application(self, client_id, request):
        application = super()._load_application(client_id, request)
        if application is not None and _live_agent(application) is None:
            request.client = None
            return None
        return application

    def validate_code(self, client_id, code, client, request, *args, **kwargs):
        if not super().validate_code(client_id, code, client, request, *args, **kwargs):
            return False
        agent = _live_agent(client)
        return bool(
            agent is not None
            and request.user is not None
            and Membership.objects.filter(team_id=agent.team_id, user_id=request.user.pk).exists()
        )

    def revoke_token(self, token, token_type_hint, request, *args, **kwargs):
        # Record the jti first: the bundle lists it until the token would have expired anyway.
        claims = _unverified_claims(token)
        application_pk = getattr(request.client, "pk", None)
        if claims and application_pk is not None:
            checksum = hashlib.sha256(token.encode()).hexdigest()
            if AccessToken.objects.filter(token_checksum=checksum, application_id=application_pk).exists():
                agent = _live_agent(request.client)
                if (
                    agent is not None
                    and claims.get("sub") == f"{SUBJECT_PREFIX}{agent.pk}"
                    and claims.get("jti")
                ):
                    from governance.services.agents import agent_token_revoked

                    agent_token_revoked(
                        agent=agent,
                        jti=str(claims["jti"]),
                        expires_at=datetime.fromtimestamp(int(claims.get("exp", time.time())), UTC),
                    )
        return super().revoke_token(token, token_type_hint, request, *args, **kwargs)


def _unverified_claims(token: str) -> dict | None:
    # Only to find the jti of a token the caller already proved it holds (checksum lookup below).
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(b64url_decode(parts[1]))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


def _request_origin(request) -> str:
    """scheme://host of the token request. DOT hands oauthlib only the path as `uri`, with Django's
    META as headers (the host already checked against ALLOWED_HOSTS, HTTPS marked by DOT), so the
    origin is rebuilt the way DOT's metadata view derives the issuer."""
    parts = urlsplit(request.uri)
    if parts.scheme and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    headers = request.headers or {}
    scheme = "https" if headers.get("X_DJANGO_OAUTH_TOOLKIT_SECURE") else "http"
    return f"{scheme}://{headers.get('HTTP_HOST', '')}"


def access_token_generator(request, refresh_token: bool = False) -> str:
    """DOT's ACCESS_TOKEN_GENERATOR: the signed JWT for the agent behind `request.client`."""
    agent = _live_agent(request.client)
    if agent is None:
        raise errors.InvalidClientError(request=request)
    # DOT resolves RFC 8707 `resource` (inherited from the grant or refresh token) only when saving the
    # token, after this generator ran; resolve it now so `aud` is what will be stored.
    AgentOAuth2Validator()._check_and_set_request_resource(request)
    resources = list(request.resource or [])
    if len(resources) != 1:
        raise errors.CustomOAuth2Error(
            error="invalid_target",
            description="Name exactly one gateway with the resource parameter (RFC 8707).",
            request=request,
        )
    now = int(time.time())
    origin = _request_origin(request)
    claims = {
        "iss": issuer_for(origin),
        "aud": resources[0],
        "sub": f"{SUBJECT_PREFIX}{agent.pk}",
        "client_id": request.client.client_id,
        "team": agent.team.slug,
        "agent": agent.slug,
        "roles": sorted(r.name for r in agent.roles.all()),
        "environments": sorted(e.name for e in agent.environments.all()),
        "scope": " ".join(request.scopes or []),
        "iat": now,
        "nbf": now,
        "exp": now + int(settings.OAUTH2_PROVIDER["ACCESS_TOKEN_EXPIRE_SECONDS"]),
        "jti": uuid.uuid4().hex,
    }
    signer = active_signer(team=agent.team)
    header = canonical_json({"alg": JWS_ALG, "kid": signer.kid, "typ": ACCESS_TOKEN_TYPE})
    signing_input = f"{b64url_encode(header)}.{b64url_encode(canonical_json(claims))}"
    return f"{signing_input}.{b64url_encode(signer.sign_detached(signing_input.encode('ascii')))}"


# RFC 8414 metadata: DOT's view; its issuer is OIDC_ISS_ENDPOINT (= MCPGOV_PORTAL_URL) or the request origin,
# the same rule as issuer_for().
oauth_metadata = OAuthServerMetadataView.as_view()


class AgentAuthorizationView(AuthorizationView):
    """DOT's authorize (login + consent) page, whose CSP lets the consent form land on the client's redirect URI.

    Browsers apply `form-action` to the redirect that follows the form post; the portal's strict
    `form-action 'self'` would stop the code from ever reaching the client.
    """

    def dispatch(self, request, *args, **kwargs):
        response = super().dispatch(request, *args, **kwargs)
        client_id = request.GET.get("client_id") or request.POST.get("client_id")
        if client_id:
            application = Application.objects.filter(client_id=client_id).only("redirect_uris").first()
            if application is not None:
                origins = sorted(
                    {
                        "{0.scheme}://{0.netloc}".format(urlsplit(uri))
                        for uri in application.redirect_uris.split()
                    }
                )
                if origins:
                    response._csp_update = {"form-action": origins}
        return response
