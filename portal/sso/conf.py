"""The identity provider's endpoints and the group-to-team mapping, read from settings.

Endpoints come from `OIDC_ISSUER`'s discovery document (fetched on first use, cached for
the process) unless set one by one; explicit settings win over discovery.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from portal.choices import TeamRole

DISCOVERY_TTL_SECONDS = 3600

# mozilla-django-oidc setting name -> discovery document key
_ENDPOINTS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
    "OIDC_OP_END_SESSION_ENDPOINT": "end_session_endpoint",
}

_lock = threading.Lock()
_discovered: dict[str, tuple[float, dict]] = {}


class ProviderUnavailable(Exception):
    """The identity provider's discovery document could not be read."""


def enabled() -> bool:
    return bool(getattr(settings, "MCPGOV_SSO_ENABLED", False))


def discovery(issuer: str) -> dict:
    """The issuer's OpenID configuration (cached; the `issuer` in it must match exactly)."""
    with _lock:
        hit = _discovered.get(issuer)
        if hit and time.monotonic() - hit[0] < DISCOVERY_TTL_SECONDS:
            return hit[1]
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT, verify=settings.OIDC_VERIFY_SSL)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(f"Could not read {url}: {exc}") from exc
    if document.get("issuer") != issuer:
        raise ProviderUnavailable(f"{url} names issuer {document.get('issuer')!r}, not {issuer!r}.")
    with _lock:
        _discovered[issuer] = (time.monotonic(), document)
    return document


def setting(name: str, *default):
    """A mozilla-django-oidc setting, with the provider endpoints filled in from discovery."""
    value = getattr(settings, name, None)
    if name in _ENDPOINTS and not value and settings.OIDC_ISSUER:
        value = discovery(settings.OIDC_ISSUER).get(_ENDPOINTS[name])
    if value is None or value == "":
        if default:
            return default[0]
        raise ImproperlyConfigured(f"Single sign-on needs the {name} setting (docs/deploy.md).")
    return value


def parse_team_role_map(raw: str) -> dict[str, tuple[str, str]]:
    """`"idp-group=team:role,…"` -> {group: (team slug, role)}; ValueError on a malformed entry."""
    mapping: dict[str, tuple[str, str]] = {}
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            continue
        group, sep, target = entry.rpartition("=")
        team, colon, role = target.partition(":")
        group, team, role = group.strip(), team.strip(), role.strip()
        if not sep or not colon or not group or not team:
            raise ValueError(f"OIDC_TEAM_ROLE_MAP entry {entry!r} is not 'group=team:role'.")
        if role not in TeamRole.values:
            raise ValueError(
                f"OIDC_TEAM_ROLE_MAP entry {entry!r}: role must be one of {', '.join(TeamRole.values)}."
            )
        if group in mapping and mapping[group] != (team, role):
            raise ValueError(f"OIDC_TEAM_ROLE_MAP maps group {group!r} twice.")
        mapping[group] = (team, role)
    return mapping


@dataclass(frozen=True)
class ClaimSettings:
    username_claim: str
    groups_claim: str
    team_role_map: dict[str, tuple[str, str]]
    create_users: bool
    link_by_email: bool


def claim_settings() -> ClaimSettings:
    return ClaimSettings(
        username_claim=settings.OIDC_USERNAME_CLAIM,
        groups_claim=settings.OIDC_GROUPS_CLAIM,
        team_role_map=parse_team_role_map(settings.OIDC_TEAM_ROLE_MAP),
        create_users=settings.OIDC_CREATE_USER,
        link_by_email=settings.OIDC_LINK_BY_EMAIL,
    )
