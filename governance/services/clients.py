"""Enforcement clients: registration, token checks, revocation, last-seen bookkeeping."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from governance.models import AgentRole, EnforcementClient, Environment
from portal import realtime
from portal.choices import ChangeEventType
from portal.errors import Unauthenticated
from portal.models import Team
from portal.permissions import MANAGE_CLIENTS, require_team_perm
from portal.services import change_record, real_user
from portal.tokens import token_issue, token_sha256

TOKEN_PREFIX = "mcpgov"  # noqa: S105 - a public marker, not a secret

# Revocation events: open long polls and streams of a client wait on this channel too, and
# answer 401 (or end) as soon as it changes. Token of a channel: the client's state.
CLIENT_CHANNEL_PREFIX = "client:"
CLIENT_ACTIVE = "active"
CLIENT_REVOKED = "revoked"


def client_channel(client_id: int) -> str:
    return f"{CLIENT_CHANNEL_PREFIX}{client_id}"


def client_channel_states(channels: list[str]) -> dict[str, str]:
    """Fallback poll (a lost or absent Redis message): the state of each watched client."""
    ids = realtime.channel_ids(channels, CLIENT_CHANNEL_PREFIX)
    rows = EnforcementClient.objects.filter(pk__in=ids).values_list("pk", "revoked_at", "expires_at")
    now = timezone.now()
    states = {ch: CLIENT_REVOKED for ch in ids.values()}  # a deleted client is as good as revoked
    for pk, revoked_at, expires_at in rows:
        ended = revoked_at is not None or (expires_at is not None and expires_at <= now)
        states[ids[pk]] = CLIENT_REVOKED if ended else CLIENT_ACTIVE
    return states


@dataclass(frozen=True)
class IssuedClient:
    client: EnforcementClient
    token: str  # shown once; only its hash is stored


class TokenError(Unauthenticated):
    """A token that does not authenticate (401). `code` is the machine-readable reason."""


def _parse(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)  # the secret part may itself contain "_" (token_urlsafe)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


@transaction.atomic
def client_create(
    *,
    team: Team,
    environment: Environment,
    name: str,
    actor=None,
    expires_at: datetime | None = None,
    roles=None,
) -> IssuedClient:
    """Register a gateway for one team and environment; returns the token once.

    `roles`: the roles its gateways may enforce. The page and the API make people pick; None (scripts,
    the management command) means every role the team has now, as migration 0006 gave existing clients.
    """
    if actor is not None:
        require_team_perm(actor, MANAGE_CLIENTS, team)
    if environment.team_id != team.pk:
        raise ValidationError({"environment": "The environment belongs to another team."})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry must be in the future."})
    new = token_issue(TOKEN_PREFIX)
    client = EnforcementClient(
        team=team,
        environment=environment,
        name=name,
        token_prefix=new.prefix,
        token_hash=new.sha256,
        created_by=real_user(actor),
        expires_at=expires_at,
    )
    client.full_clean()
    client.save()
    if roles is None:
        roles = list(AgentRole.objects.filter(team=team))
    if any(r.team_id != team.pk for r in roles):
        raise ValidationError({"roles": "A role belongs to another team."})
    client.roles.set(roles)
    change_record(
        team=team,
        actor=actor,
        event_type=ChangeEventType.CLIENT_CREATED,
        obj=client,
        summary=f"Enforcement client {name} registered for {environment.name}",
    )
    return IssuedClient(client=client, token=new.token)


@transaction.atomic
def client_revoke(*, client: EnforcementClient, actor=None) -> EnforcementClient:
    if actor is not None:
        require_team_perm(actor, MANAGE_CLIENTS, client.team)
    if client.revoked_at is None:
        client.revoked_at = timezone.now()
        client.save(update_fields=["revoked_at"])
        change_record(
            team=client.team,
            actor=actor,
            event_type=ChangeEventType.CLIENT_REVOKED,
            obj=client,
            summary=f"Enforcement client {client.name} revoked",
        )
        # Wake this client's open long polls and streams (every web process, through Redis).
        realtime.notify_on_commit(client_channel(client.pk), CLIENT_REVOKED)
    return client


class _ClientLookup:
    """The token lookup as one prepared raw query: the client row with its team and environment.

    Every gateway request starts here. The ORM's `select_related("team", "environment")` query
    spends ≈ 2.5 ms of CPU compiling itself (three models' columns, the default ordering's join)
    against ≈ 0.3 ms for the same SELECT written once; the rows are turned into model instances
    the way the ORM does it (each field's database converters, then `Model.from_db`, the related
    objects cached on the client as `select_related` caches them). There is no cache of answers:
    the row is read on every request, so a revocation or expiry counts at the next request.
    """

    def __init__(self) -> None:
        self.models = (EnforcementClient, Team, Environment)
        self.fields = [list(model._meta.concrete_fields) for model in self.models]
        quote = connection.ops.quote_name
        columns = ", ".join(
            f"{alias}.{quote(field.column)}"
            for alias, fields in zip(("c", "t", "e"), self.fields, strict=True)
            for field in fields
        )
        client_meta = EnforcementClient._meta
        self.sql = (
            f"SELECT {columns} FROM {quote(client_meta.db_table)} c "  # noqa: S608 - names from the models
            f"JOIN {quote(Team._meta.db_table)} t ON t.{quote(Team._meta.pk.column)} = "
            f"c.{quote(client_meta.get_field('team').column)} "
            f"JOIN {quote(Environment._meta.db_table)} e ON e.{quote(Environment._meta.pk.column)} = "
            f"c.{quote(client_meta.get_field('environment').column)} "
            f"WHERE c.{quote(client_meta.get_field('token_prefix').column)} = %s"
        )
        # As the compiler applies them: the backend's converters, then the field's (from_db_value).
        self.converters = []
        for alias, fields in zip(("c", "t", "e"), self.fields, strict=True):
            model_converters = []
            for i, field in enumerate(fields):
                col = field.get_col(alias)
                funcs = [*connection.ops.get_db_converters(col), *field.get_db_converters(connection)]
                if funcs:
                    model_converters.append((i, col, funcs))
            self.converters.append(model_converters)

    def instances(self, row) -> EnforcementClient:
        objects, start = [], 0
        for model, fields, converters in zip(self.models, self.fields, self.converters, strict=True):
            values = list(row[start : start + len(fields)])
            start += len(fields)
            for i, col, funcs in converters:
                for func in funcs:
                    values[i] = func(values[i], col, connection)
            objects.append(model.from_db(connection.alias, [f.attname for f in fields], values))
        client, team, environment = objects
        EnforcementClient._meta.get_field("team").set_cached_value(client, team)
        EnforcementClient._meta.get_field("environment").set_cached_value(client, environment)
        return client


_lookup: _ClientLookup | None = None


def _client_by_prefix(prefix: str) -> EnforcementClient | None:
    """The client whose token has this public prefix, with team and environment loaded."""
    global _lookup
    if _lookup is None:
        _lookup = _ClientLookup()
    with connection.cursor() as cursor:
        cursor.execute(_lookup.sql, [prefix])
        row = cursor.fetchone()
    return None if row is None else _lookup.instances(row)


def client_authenticate(token: str, *, allow_revoked: bool = False) -> EnforcementClient:
    """The client a bearer token belongs to, or TokenError saying why not.

    `allow_revoked`: only for delivering what was recorded before the revocation (events, the end report);
    the caller checks the session was opened before `revoked_at`.
    """
    parsed = _parse(token or "")
    if parsed is None:
        raise TokenError("Malformed enforcement-client token.", "token_malformed")
    client = _client_by_prefix(parsed[0])
    if client is None or not hmac.compare_digest(client.token_hash, token_sha256(token)):
        raise TokenError("Unknown enforcement-client token.", "token_invalid")
    if client.revoked_at is not None and not allow_revoked:
        raise TokenError("This enforcement-client token has been revoked.", "token_revoked")
    if client.expires_at is not None and client.expires_at <= timezone.now():
        raise TokenError("This enforcement-client token has expired.", "token_expired")
    return client


# One last-seen write per client per this many seconds (a new address or bundle version is written at
# once): a thousand gateways re-polling after every toggle are not a thousand UPDATEs each time. Stale
# gateways are told apart in minutes (MCPGOV_STALE_CLIENT_MINUTES).
SEEN_THROTTLE_SECONDS = 15


def client_seen(*, client: EnforcementClient, address: str | None, bundle_version: int | None) -> None:
    """Record last seen time, address and running bundle version (last seen: throttled, SEEN_THROTTLE_SECONDS)."""
    now = timezone.now()
    fields = {}
    if client.last_seen_at is None or (now - client.last_seen_at).total_seconds() >= SEEN_THROTTLE_SECONDS:
        fields["last_seen_at"] = now
    if address and address != client.last_seen_address:
        fields["last_seen_address"] = address
    if bundle_version is not None and bundle_version != client.bundle_version:
        fields["bundle_version"] = bundle_version
    if fields:
        EnforcementClient.objects.filter(pk=client.pk).update(**fields)
        for key, value in fields.items():
            setattr(client, key, value)
