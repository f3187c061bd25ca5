"""DRF authentication for enforcement clients: `Authorization: Bearer mcpgov_…`."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from governance.models import EnforcementClient
from governance.services.clients import TokenError, client_authenticate


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
    allow_revoked = False

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if parts[0] != self.keyword:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                {"detail": "Authorization header must be 'Bearer <token>'.", "code": "token_malformed"}
            )
        try:
            client = client_authenticate(parts[1], allow_revoked=self.allow_revoked)
        except TokenError as exc:
            raise exceptions.AuthenticationFailed({"detail": str(exc), "code": exc.code}) from exc
        return ClientUser(client), client

    def authenticate_header(self, request) -> str:
        return self.keyword


class ClientDeliveryAuthentication(ClientTokenAuthentication):
    """Also lets a revoked client in, for the views that accept its last deliveries (they check the session)."""

    allow_revoked = True


class IsEnforcementClient(permissions.BasePermission):
    """Only a request authenticated by an enforcement-client token."""

    message = "This endpoint needs an enforcement-client token (Authorization: Bearer …)."

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
