"""`manage.py check` (and every server start): the SSO settings are well formed."""

from __future__ import annotations

from django.conf import settings
from django.core import checks

from portal.sso.conf import parse_team_role_map


def check_sso_settings(app_configs=None, **kwargs):
    errors = []
    try:
        parse_team_role_map(settings.OIDC_TEAM_ROLE_MAP)
    except ValueError as exc:
        errors.append(checks.Error(str(exc), id="portal.E101", hint="Use 'idp-group=team-slug:role,…'."))
    if settings.MCPGOV_SSO_ENABLED and not settings.OIDC_RP_CLIENT_SECRET:
        errors.append(checks.Error("OIDC_CLIENT_ID is set but OIDC_CLIENT_SECRET is not.", id="portal.E102"))
    if settings.MCPGOV_SSO_ENABLED and not settings.OIDC_TEAM_ROLE_MAP:
        errors.append(
            checks.Warning(
                "Single sign-on is on but OIDC_TEAM_ROLE_MAP is empty: SSO users get no team from their groups.",
                id="portal.W101",
            )
        )
    return errors
