"""Enforcement-client authentication: `Authorization: Bearer mcpgov_…`, the one front door.

`client_token` reads the header, `client_from_authorization` / `client_from_request` turn it
into the client (or TokenError saying why not); the DRF authentication classes, the bundle
route, the control long poll and the Unleash views all go through them.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from governance.models import EnforcementClient
from governance.services.clients import TokenError, client_authenticate

NOT_AUTHENTICATED = "This endpoint needs an enforcement-client token (Authorization: Bearer …)."


def client_token(authorization: str, *, raw: bool = False) -> str | None:
    """The enforcement-client token of an `Authorization` value (`Bearer <token>`; with `raw`,
    as stock Unleash SDKs send it, the bare token too), or None when it holds none.

    Raises TokenError("token_malformed") for a Bearer value with more than one token.
    """
    parts = (authorization or "").split()
    if raw and len(parts) == 1:
        return parts[0]
    if len(parts) < 2 or parts[0].lower() != "bearer":
        return None
    if len(parts) > 2:
        raise TokenError("Authorization header must be 'Bearer <token>'.", "token_malformed")
    return parts[1]


def client_from_authorization(authorization: str, *, raw: bool = False) -> EnforcementClient:
    """The client of an `Authorization` value, or TokenError (code `not_authenticated` when it has no token)."""
    token = client_token(authorization, raw=raw)
    if token is None:
        raise TokenError(NOT_AUTHENTICATED, "not_authenticated")
    return client_authenticate(token)


def client_from_request(request, *, raw: bool = False) -> EnforcementClient:
    """The enforcement client of a Django (or DRF) request; see `client_from_authorization`."""
    return client_from_authorization(request.headers.get("Authorization", ""), raw=raw)


class ClientUser:
    """The request.user of an enforcement client: authenticated, never a person."""

    is_authenticated = True
    is_active = True
    is_anonymous = False
    is_staff = False
    is_superuser = False

    def __init__(self, client: EnforcementClient):
        self.client = client
        self.pk = None

    def has_perm(self, perm, obj=None) -> bool:  # people's permissions never apply to a gateway
        return False

    def get_username(self) -> str:
        return f"client:{self.client.name}"

    def __str__(self) -> str:
        return self.get_username()


class ClientTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"
    raw = False  # whether a bare token (no scheme) counts
    allow_revoked = False

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        try:
            token = client_token(header, raw=self.raw)
            if token is None:
                return None  # not ours: another authenticator, or anonymous
            client = client_authenticate(token, allow_revoked=self.allow_revoked)
        except TokenError as exc:
            raise exceptions.AuthenticationFailed({"detail": str(exc), "code": exc.code}) from exc
        self.seen(request, client)
        return ClientUser(client), client

    def seen(self, request, client: EnforcementClient) -> None:
        """Hook: what a subclass records about the client on each request."""

    def authenticate_header(self, request) -> str:
        return self.keyword


class ClientDeliveryAuthentication(ClientTokenAuthentication):
    """Also lets a revoked client in, for the views that accept its last deliveries (they check the session)."""

    allow_revoked = True


class IsEnforcementClient(permissions.BasePermission):
    """Only a request authenticated by an enforcement-client token."""

    message = NOT_AUTHENTICATED

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, EnforcementClient)


class ClientTokenScheme(OpenApiAuthenticationExtension):
    """Documents the enforcement-client bearer token in the OpenAPI schema."""

    target_class = "governance.api.authentication.ClientTokenAuthentication"
    name = "enforcementClientToken"
    match_subclasses = True

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "mcpgov_<prefix>_<secret>",
            "description": "An enforcement-client token (issued once at registration; see docs/enforcer-api.md).",
        }


class ClientDeliveryScheme(ClientTokenScheme):
    """The same token where a revoked client may still deliver its last events (its own scheme name)."""

    target_class = "governance.api.authentication.ClientDeliveryAuthentication"
    name = "enforcementClientDelivery"
    match_subclasses = False
    priority = 1

    def get_security_definition(self, auto_schema):
        return {
            **super().get_security_definition(auto_schema),
            "description": (
                "An enforcement-client token; a revoked client's token is still accepted here for "
                "the sessions it opened before the revocation (see docs/enforcer-api.md)."
            ),
        }
