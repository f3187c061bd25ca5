"""Agents: registration (an OAuth client each), API keys, revocation (docs/enforcer-api.md, "Agent identity").

Revoking an agent, one of its keys or one of its access tokens republishes the team's bundles at once
(like a flag): the bundle's `agents` list is what the gateways check every token and key against.
"""

from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import Application

from governance.models import Agent, AgentApiKey, AgentRevokedToken, AgentRole, Environment
from governance.services.flags import bundles_publish_now
from mcpgov.identity import API_KEY_PREFIX
from portal.choices import ChangeEventType
from portal.models import Team
from portal.permissions import MANAGE_CLIENTS, require_team_perm
from portal.services import change_record
from portal.tokens import token_issue, token_sha256

API_KEY_MARKER = API_KEY_PREFIX.removesuffix("_")  # the gateway tells keys by the prefix

# The two kinds of OAuth client an agent can be.
GRANT_CLIENT_CREDENTIALS = "client_credentials"  # headless, confidential
GRANT_AUTHORIZATION_CODE = "authorization_code"  # interactive (PKCE S256), public or confidential


@dataclass(frozen=True)
class IssuedAgent:
    agent: Agent
    client_id: str
    client_secret: str | None  # shown once (confidential clients); DOT stores only its hash


@dataclass(frozen=True)
class IssuedApiKey:
    api_key: AgentApiKey
    key: str  # shown once


api_key_sha256 = token_sha256  # what the bundle lists of each key


# RFC 8252 §7.3: a native app's loopback redirect is plain http to the loopback interface — an IP
# literal (its port may be chosen at run time, which DOT allows for these) or, NOT RECOMMENDED but
# used by real MCP clients (the MCP Inspector), "localhost" with its exact port. Every other redirect
# URI must be https (RFC 9700 §2.1) — why config/settings.py keeps "http" in DOT's allowed schemes
# and silences oauth2_provider.W008.
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def check_redirect_uris(redirect_uris: str) -> None:
    for uri in redirect_uris.split():
        parsed = urllib.parse.urlsplit(uri)
        if parsed.fragment:
            raise ValidationError({"redirect_uris": f"{uri}: a redirect URI has no fragment."})
        if parsed.scheme == "https" and parsed.hostname:
            continue
        if parsed.scheme == "http" and parsed.hostname in LOOPBACK_HOSTS:
            continue
        raise ValidationError(
            {
                "redirect_uris": f"{uri}: use https, or http://127.0.0.1, http://[::1] or "
                "http://localhost for a native app's loopback redirect (RFC 8252)."
            }
        )


def _check_bindings(team: Team, roles: Iterable[AgentRole], environments: Iterable[Environment]) -> None:
    if any(r.team_id != team.pk for r in roles):
        raise ValidationError({"roles": "A role belongs to another team."})
    if any(e.team_id != team.pk for e in environments):
        raise ValidationError({"environments": "An environment belongs to another team."})


@transaction.atomic
def agent_create(
    *,
    team: Team,
    name: str,
    slug: str,
    roles: list[AgentRole],
    environments: list[Environment],
    grant: str = GRANT_CLIENT_CREDENTIALS,
    public: bool = False,
    redirect_uris: str = "",
    actor=None,
) -> IssuedAgent:
    """Register an agent and its OAuth client; the client secret is returned once."""
    if actor is not None:
        require_team_perm(actor, MANAGE_CLIENTS, team)
    _check_bindings(team, roles, environments)
    if not roles:
        raise ValidationError({"roles": "Pick at least one role the agent may use."})
    if grant == GRANT_CLIENT_CREDENTIALS:
        if public:
            raise ValidationError({"public": "A client-credentials agent is a confidential client."})
        grant_type = Application.GRANT_CLIENT_CREDENTIALS
    elif grant == GRANT_AUTHORIZATION_CODE:
        if not redirect_uris.strip():
            raise ValidationError({"redirect_uris": "An interactive agent needs at least one redirect URI."})
        check_redirect_uris(redirect_uris)
        grant_type = Application.GRANT_AUTHORIZATION_CODE
    else:
        raise ValidationError({"grant": "Unknown grant."})
    agent = Agent(
        team=team,
        name=name,
        slug=slug,
        created_by=actor if actor is not None and actor.is_authenticated else None,
    )
    agent.full_clean()
    secret = None if public else secrets.token_urlsafe(32)
    application = Application(
        name=f"{team.slug}/{slug}",
        client_type=Application.CLIENT_PUBLIC if public else Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=grant_type,
        redirect_uris=redirect_uris.strip(),
        client_secret=secret or "",
        hash_client_secret=True,
        skip_authorization=False,
        algorithm="",
    )
    application.full_clean(exclude=["user", "client_secret"])
    application.save()
    agent.application = application
    agent.save()
    agent.roles.set(roles)
    agent.environments.set(environments)
    change_record(
        team=team,
        actor=actor,
        event_type=ChangeEventType.AGENT_CREATED,
        obj=agent,
        summary=f"Agent {slug} registered (roles {', '.join(sorted(r.name for r in roles))})",
    )
    bundles_publish_now(team=team, environments=environments, reason=f"agent {slug} registered")
    return IssuedAgent(agent=agent, client_id=application.client_id, client_secret=secret)


def _names(objs) -> list[str]:
    return sorted(o.name for o in objs)


@transaction.atomic
def agent_update(
    *,
    agent: Agent,
    roles: list[AgentRole],
    environments: list[Environment],
    name: str | None = None,
    redirect_uris: str | None = None,
    actor=None,
) -> Agent:
    """Change what the agent may use (roles, environments), its name, or an interactive client's redirect URIs.

    The bundles of every environment it was or is now allowed in are republished at once: a role or
    environment taken away stops working on the next request.
    """
    if actor is not None:
        require_team_perm(actor, MANAGE_CLIENTS, agent.team)
    # "of": only the agent row is locked (its OAuth client is the nullable side of an outer join)
    agent = (
        Agent.objects.select_for_update(of=("self",)).select_related("application", "team").get(pk=agent.pk)
    )
    if agent.is_revoked:
        raise ValidationError("The agent is revoked: register a new one instead.")
    _check_bindings(agent.team, roles, environments)
    if not roles:
        raise ValidationError({"roles": "Pick at least one role the agent may use."})
    old_roles, before = list(agent.roles.all()), set(agent.environments.all())
    changes: dict[str, list] = {}
    if _names(old_roles) != _names(roles):
        changes["roles"] = [_names(old_roles), _names(roles)]
    if _names(before) != _names(environments):
        changes["environments"] = [_names(before), _names(environments)]
    if name is not None and name != agent.name:
        changes["name"] = [agent.name, name]
        agent.name = name
        agent.full_clean()
        agent.save(update_fields=["name"])
    application = agent.application
    if redirect_uris is not None and application is not None:
        uris = " ".join(redirect_uris.split())
        if uris != " ".join(application.redirect_uris.split()):
            if application.authorization_grant_type != Application.GRANT_AUTHORIZATION_CODE:
                raise ValidationError({"redirect_uris": "Only an interactive agent has redirect URIs."})
            if not uris:
                raise ValidationError(
                    {"redirect_uris": "An interactive agent needs at least one redirect URI."}
                )
            check_redirect_uris(uris)  # the registration's rule (RFC 8252 loopback or https), on edits too
            changes["redirect_uris"] = [application.redirect_uris.split(), uris.split()]
            application.redirect_uris = uris
            try:
                application.full_clean(exclude=["user", "client_secret"])
            except ValidationError as exc:
                raise ValidationError({"redirect_uris": exc.messages}) from None
            application.save(update_fields=["redirect_uris"])
    agent.roles.set(roles)
    agent.environments.set(environments)
    change_record(
        team=agent.team,
        actor=actor,
        event_type=ChangeEventType.AGENT_UPDATED,
        obj=agent,
        summary=f"Agent {agent.slug} changed",
        changes=changes,
    )
    bundles_publish_now(
        team=agent.team, environments=before | set(environments), reason=f"agent {agent.slug} changed"
    )
    return agent


@transaction.atomic
def agent_revoke(*, agent: Agent, actor=None) -> Agent:
    """A kill switch for the agent: its tokens and keys stop working on every gateway at once."""
    if actor is not None:
        require_team_perm(actor, MANAGE_CLIENTS, agent.team)
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    if agent.revoked_at is None:
        agent.revoked_at = timezone.now()
        agent.save(update_fields=["revoked_at"])
        if agent.application_id is not None:
            # No new tokens either: the OAuth client goes too.
            Application.objects.filter(pk=agent.application_id).delete()
        change_record(
            team=agent.team,
            actor=actor,
            event_type=ChangeEventType.AGENT_REVOKED,
            obj=agent,
            summary=f"Agent {agent.slug} revoked",
        )
        bundles_publish_now(team=agent.team, environments=None, reason=f"agent {agent.slug} revoked")
    return agent


@transaction.atomic
def agent_api_key_create(*, agent: Agent, actor=None) -> IssuedApiKey:
    if actor is not None:
        require_team_perm(actor, MANAGE_CLIENTS, agent.team)
    if agent.is_revoked:
        raise ValidationError("The agent is revoked.")
    new = token_issue(API_KEY_MARKER)
    prefix = new.prefix
    row = AgentApiKey.objects.create(agent=agent, prefix=prefix, key_hash=new.sha256)
    change_record(
        team=agent.team,
        actor=actor,
        event_type=ChangeEventType.AGENT_KEY_ISSUED,
        obj=agent,
        summary=f"API key {prefix} issued for agent {agent.slug}",
    )
    bundles_publish_now(team=agent.team, environments=None, reason=f"agent {agent.slug} key issued")
    return IssuedApiKey(api_key=row, key=new.token)


@transaction.atomic
def agent_api_key_revoke(*, api_key: AgentApiKey, actor=None) -> AgentApiKey:
    agent = api_key.agent
    if actor is not None:
        require_team_perm(actor, MANAGE_CLIENTS, agent.team)
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        change_record(
            team=agent.team,
            actor=actor,
            event_type=ChangeEventType.AGENT_KEY_REVOKED,
            obj=agent,
            summary=f"API key {api_key.prefix} of agent {agent.slug} revoked",
        )
        bundles_publish_now(team=agent.team, environments=None, reason=f"agent {agent.slug} key revoked")
    return api_key


def agent_token_revoked(*, agent: Agent, jti: str, expires_at: datetime) -> None:
    """Called by the OAuth revocation endpoint: the token's jti rides in the bundle until it expires."""
    with transaction.atomic():
        _, created = AgentRevokedToken.objects.get_or_create(
            jti=jti, defaults={"agent": agent, "expires_at": expires_at}
        )
        if created:
            bundles_publish_now(
                team=agent.team, environments=None, reason=f"agent {agent.slug} token revoked"
            )
