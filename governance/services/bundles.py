"""The bundle compiler: one team+environment's policy → `mcpgov.bundle/1` → a signed, versioned PolicyBundle.

The schema is `mcpgov.bundle.Bundle` (shared with the gateway); the payload is its canonical
JSON, signed by `mcpgov.verify.sign_bundle` with the team's active key. The *content* is the payload
without `version`, `issued_at` and `expires_at`; its sha256 is the content hash. A new version
is made only when the content hash changes, or to re-issue a bundle past half its lifetime
(so gateways never fail closed while the portal is up). Old versions are kept.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Max, OuterRef, Subquery, TextField, Value
from django.db.models.functions import MD5, Cast, Concat
from django.utils import timezone

from governance.choices import AccessClass, AccessRequestStatus, RuleKind
from governance.models import (
    SERVER_REQUEST_FIELDS,
    AccessRequest,
    Agent,
    AgentApiKey,
    AgentRevokedToken,
    AgentRole,
    Environment,
    Flag,
    FlagState,
    GlobalRateLimit,
    McpServer,
    McpTool,
    PolicyBundle,
    RoleServerRule,
    ServerBinding,
    ServerRateLimit,
    TriggerSettings,
)
from governance.services.signing import active_signer
from mcpgov.bundle import Bundle, canonical_json, constraints_resolve, tool_definition_hash
from portal import metrics, realtime
from portal.models import ChangeRecord
from portal.services import real_user

# Not part of the content: they change on every re-issue of the same policy.
ENVELOPE_FIELDS = ("version", "issued_at", "expires_at")
CHANNEL_PREFIX = "bundle:"
REFRESH_REASON = "periodic re-issue (more than half the lifetime passed)"


def bundle_channel(environment_id: int) -> str:
    """The realtime channel woken when a new bundle of this environment is published."""
    return f"{CHANNEL_PREFIX}{environment_id}"


# --- reading the policy (selectors: a fixed number of queries, whatever the size) ----------------


def _roles(team_id: int) -> dict[str, dict[str, list[str]]]:
    roles: dict[str, dict[str, list[str]]] = {
        name: {"allowed_servers": [], "forbidden_servers": []}
        for name in AgentRole.objects.filter(team_id=team_id).values_list("name", flat=True)
    }
    rules = RoleServerRule.objects.filter(role__team_id=team_id).values_list(
        "role__name", "server__slug", "kind"
    )
    for role, server, kind in rules:
        roles[role]["allowed_servers" if kind == RuleKind.ALLOWED else "forbidden_servers"].append(server)
    for policy in roles.values():
        policy["allowed_servers"].sort()
        policy["forbidden_servers"].sort()
    return roles


def _tool_class(read_only_hint: bool | None, override: str) -> str:
    # McpTool.access_class, on plain values (no model instances for thousands of tools):
    # the admin's override, else the MCP default — no readOnlyHint means "may write".
    return override or (AccessClass.READ if read_only_hint is True else AccessClass.WRITE)


# (tool id, fingerprint of name+description+schema computed by the database) -> definition hash.
# Rebuilds then parse and hash only the tools whose definition changed since this process saw them.
_definition_hashes: dict[tuple[int, str], str] = {}
_DEFINITION_CACHE_LIMIT = 500_000


def _definition_hashes_for(team_id: int) -> dict[int, str]:
    """{tool id: definition hash} for the team's discovered tools (undiscovered ones are not pinned)."""
    fingerprint = MD5(
        Concat(
            "name",
            Value("\x1f"),
            "description",
            Value("\x1f"),
            Cast("input_schema", TextField()),
            output_field=TextField(),
        )
    )
    rows = dict(
        McpTool.objects.filter(server__team_id=team_id, discovered_at__isnull=False)
        .annotate(fp=fingerprint)
        .values_list("id", "fp")
    )
    out = {pk: _definition_hashes[(pk, fp)] for pk, fp in rows.items() if (pk, fp) in _definition_hashes}
    missing = [pk for pk in rows if pk not in out]
    if len(_definition_hashes) + len(missing) > _DEFINITION_CACHE_LIMIT:
        _definition_hashes.clear()
    for start in range(0, len(missing), 2000):
        for pk, name, description, schema in McpTool.objects.filter(
            pk__in=missing[start : start + 2000]
        ).values_list("id", "name", "description", "input_schema"):
            out[pk] = _definition_hashes[(pk, rows[pk])] = tool_definition_hash(name, description, schema)
    return out


def _servers(team_id: int) -> dict[str, dict[str, Any]]:
    hashes = _definition_hashes_for(team_id)
    tools_by_server: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    tools = McpTool.objects.filter(server__team_id=team_id).values_list(
        "id",
        "server_id",
        "name",
        "read_only_hint",
        "access_class_override",
        "approval_required",
    )
    for pk, server_id, name, hint, override, approval in tools:
        tools_by_server[server_id][name] = {
            "class": _tool_class(hint, override),
            "approval_required": approval,
            # Pinned only when the portal saw the definition (discovery); hand-entered tools are not.
            "definition_hash": hashes.get(pk),
        }
    servers = {}
    rows = McpServer.objects.filter(team_id=team_id).values_list(
        "id",
        "slug",
        "category",
        "transport",
        "command",
        "args",
        "url",
        "cost_per_call",
        "allow_unknown_tools",
        *SERVER_REQUEST_FIELDS,
    )
    for pk, slug, category, transport, command, args, url, cost, unknown, *asks in rows:
        sampling, max_tokens, sampling_tools, elicitation, url_domains, roots = asks
        servers[slug] = {
            "category": category,
            "transport": transport,
            "command": command or None,
            "args": list(args or []),
            "url": url or None,
            "tools": tools_by_server.get(pk, {}),
            "cost_per_call": float(cost),
            "allow_unknown_tools": unknown,
            # left out of the signed bundle when it is the default (mcpgov.bundle.ServerSpec)
            "server_requests": {
                "sampling": sampling,
                "sampling_max_tokens": max_tokens,
                "sampling_tools": sampling_tools,
                "elicitation": elicitation,
                "elicitation_url_domains": sorted(url_domains or []),
                "roots": roots,
            },
        }
    return servers


def _environment_policy(environment: Environment) -> dict[str, Any]:
    bindings = ServerBinding.objects.filter(environment_id=environment.pk).values_list(
        "server__slug", "target", "permission"
    )
    return {
        "name": environment.name,
        "requires_authorization": bool(environment.requires_authorization or environment.is_production),
        "forbidden_patterns": list(environment.forbidden_patterns or []),
        "production_url_words": [],
        "bindings": {
            slug: {"target": target, "permission": permission} for slug, target, permission in bindings
        },
    }


def _rate_limits(team_id: int) -> dict[str, Any]:
    global_row = (
        GlobalRateLimit.objects.filter(team_id=team_id)
        .values("max_calls_per_session", "max_calls_per_minute", "pause_at_percent")
        .first()
    )
    per_server = {
        row.pop("server__slug"): row
        for row in ServerRateLimit.objects.filter(team_id=team_id).values(
            "server__slug", *ServerRateLimit.FIELDS
        )
    }
    return {"global": global_row or {}, "per_server": per_server}


def _triggers(team_id: int) -> dict[str, Any]:
    row = (
        TriggerSettings.objects.filter(team_id=team_id)
        .values("cascade_write_threshold", "large_data_bytes", "production_url_words")
        .first()
    )
    return row or {}


def flag_constraints_resolve(
    constraints: list[dict[str, Any]], environment_name: str
) -> tuple[bool, list[dict[str, Any]]]:
    """Evaluate what the portal knows now (the environment); keep the role constraints for the
    gateway. Returns (constraints pass here, role constraints left); see
    `mcpgov.bundle.constraints_resolve`, the one evaluator both halves use."""
    return constraints_resolve(constraints, {"environment": environment_name})


def flags_section(team_id: int, environment: Environment) -> list[dict[str, Any]]:
    """The bundle's `flags`: every flag of the team resolved for `environment` (also what a flags update carries)."""
    states = {
        row["flag_id"]: row
        for row in FlagState.objects.filter(environment_id=environment.pk).values(
            "flag_id", "enabled", "constraints", "reason", "changed_at"
        )
    }
    flags = []
    for pk, name, server, capability in (
        Flag.objects.filter(team_id=team_id)
        .values_list("id", "name", "server__slug", "capability")
        .order_by("name")
    ):
        state = states.get(pk)
        # No strategy in this environment: the flag is on (a kill switch only stops what it is set to stop).
        enabled = True if state is None else state["enabled"]
        passes, role_constraints = flag_constraints_resolve(
            state["constraints"] if state else [], environment.name
        )
        flags.append(
            {
                "name": name,
                "server": server,
                "capability": capability,
                "enabled": enabled and passes,
                "reason": (state or {}).get("reason") or "",
                "changed_at": state["changed_at"] if state else None,
                "constraints": role_constraints,
            }
        )
    return flags


def _grants(environment: Environment, now: datetime) -> list[dict[str, Any]]:
    rows = list(
        AccessRequest.objects.filter(
            environment_id=environment.pk,
            status=AccessRequestStatus.APPROVED,
            revoked_at__isnull=True,
            ends_at__gt=now,
        )
        .values_list("id", "role__name", "starts_at", "ends_at")
        .order_by("id")
    )
    servers: dict[int, list[str]] = defaultdict(list)
    through = AccessRequest.servers.through
    for request_id, slug in through.objects.filter(accessrequest_id__in=[r[0] for r in rows]).values_list(
        "accessrequest_id", "mcpserver__slug"
    ):
        servers[request_id].append(slug)
    return [
        {"id": str(pk), "role": role, "servers": sorted(servers[pk]), "starts_at": starts, "ends_at": ends}
        for pk, role, starts, ends in rows
    ]


def _agents(environment: Environment, now: datetime) -> list[dict[str, Any]]:
    """The agents allowed in this environment (revoked ones flagged), with key hashes and revoked jtis."""
    agents = list(
        Agent.objects.filter(environments=environment)
        .prefetch_related("roles", "environments")
        .order_by("pk")
    )
    ids = [a.pk for a in agents]
    keys: dict[int, list[str]] = defaultdict(list)
    for agent_id, key_hash in AgentApiKey.objects.filter(
        agent_id__in=ids, revoked_at__isnull=True
    ).values_list("agent_id", "key_hash"):
        keys[agent_id].append(key_hash)
    jtis: dict[int, list[str]] = defaultdict(list)
    for agent_id, jti in AgentRevokedToken.objects.filter(agent_id__in=ids, expires_at__gt=now).values_list(
        "agent_id", "jti"
    ):
        jtis[agent_id].append(jti)
    return [
        {
            "id": str(a.pk),
            "slug": a.slug,
            "roles": sorted(r.name for r in a.roles.all()),
            "environments": sorted(e.name for e in a.environments.all()),
            "revoked": a.revoked_at is not None,
            "api_key_sha256": [] if a.revoked_at else sorted(keys[a.pk]),
            "revoked_jti": sorted(jtis[a.pk]),
        }
        for a in agents
    ]


def bundle_document(*, environment: Environment, now: datetime | None = None) -> dict[str, Any]:
    """Everything the gateway needs for one team+environment, as an unvalidated bundle document
    (without the envelope fields)."""
    now = now or timezone.now()
    team = environment.team
    return {
        "schema": "mcpgov.bundle/1",
        "team": team.slug,
        "environment": environment.name,
        "roles": _roles(team.pk),
        "servers": _servers(team.pk),
        "environment_policy": _environment_policy(environment),
        "rate_limits": _rate_limits(team.pk),
        "triggers": _triggers(team.pk),
        "flags": flags_section(team.pk, environment),
        "grants": _grants(environment, now),
        "agents": _agents(environment, now),
    }


# --- compiling -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledPolicy:
    bundle: Bundle  # validated, with placeholder envelope fields
    content: dict[str, Any]  # the normalised content (defaults filled in), JSON types only
    content_hash: str

    def payload(self, *, version: int, issued_at: datetime, expires_at: datetime) -> bytes:
        """`Bundle.canonical_bytes()` of the bundle with these envelope fields.

        Only the three envelope fields are serialised again (by the schema's own serialisers);
        the content is already the schema's dump, and canonical JSON sorts the keys.
        """
        if expires_at <= issued_at:
            raise ValueError("expires_at must be after issued_at")
        envelope = self.bundle.model_copy(
            update={"version": version, "issued_at": issued_at, "expires_at": expires_at}
        ).model_dump(mode="json", by_alias=True, include=set(ENVELOPE_FIELDS))
        return canonical_json({**self.content, **envelope})


def content_hash(content: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(content)).hexdigest()


def bundle_compile(*, environment: Environment, now: datetime | None = None) -> CompiledPolicy:
    """Build and validate the bundle with the shared pydantic schema; raises pydantic's ValidationError."""
    now = now or timezone.now()
    doc = bundle_document(environment=environment, now=now)
    bundle = Bundle.model_validate(
        {**doc, "version": 1, "issued_at": now, "expires_at": now + timedelta(seconds=1)}
    )
    content = {k: v for k, v in bundle.to_json_dict().items() if k not in ENVELOPE_FIELDS}
    return CompiledPolicy(bundle=bundle, content=content, content_hash=content_hash(content))


def bundle_needs_reissue(
    *, issued_at: datetime, expires_at: datetime, ttl_seconds: int, now: datetime
) -> bool:
    """The one re-issue rule: more than half the team's bundle lifetime has passed since the
    latest bundle was issued, or that bundle was issued with another lifetime (the TTL changed)."""
    lifetime = (expires_at - issued_at).total_seconds()
    return (now - issued_at).total_seconds() > ttl_seconds / 2 or int(lifetime) != ttl_seconds


@dataclass(frozen=True)
class PublishResult:
    bundle: PolicyBundle
    created: bool


def bundle_publish(
    *, environment: Environment, reason: str = "", actor=None, now: datetime | None = None
) -> PublishResult:
    """Publish the environment's bundle if its content changed (or it needs re-issuing); idempotent.

    Publishers of one environment are serialised by a row lock on the environment, so
    versions are gap-free and monotonic and two concurrent rebuilds make one version.
    """
    started = time.perf_counter()
    with transaction.atomic():
        env = Environment.objects.select_for_update().select_related("team").get(pk=environment.pk)
        team = env.team
        now = now or timezone.now()
        compiled = bundle_compile(environment=env, now=now)
        latest = (
            PolicyBundle.objects.filter(environment=env)
            .order_by("-version")
            .only("pk", "version", "content_hash", "issued_at", "expires_at", "team_id", "environment_id")
            .first()
        )
        if latest is not None and latest.content_hash == compiled.content_hash:
            if not bundle_needs_reissue(
                issued_at=latest.issued_at,
                expires_at=latest.expires_at,
                ttl_seconds=team.bundle_ttl_seconds,
                now=now,
            ):
                metrics.bundle_built(started, created=False)
                return PublishResult(latest, created=False)
            reason = reason if reason and reason != "policy changed" else REFRESH_REASON
        version = (latest.version if latest else 0) + 1
        expires_at = now + timedelta(seconds=team.bundle_ttl_seconds)
        signer = active_signer(team=team)
        jws = signer.sign(compiled.payload(version=version, issued_at=now, expires_at=expires_at))
        bundle = PolicyBundle.objects.create(
            team=team,
            environment=env,
            version=version,
            content_hash=compiled.content_hash,
            content=compiled.content,
            jws=jws,
            etag=hashlib.sha256(jws.encode("ascii")).hexdigest(),
            kid=signer.kid,
            issued_at=now,
            expires_at=expires_at,
            reason=(reason or "policy changed")[:500],
            created_by=real_user(actor),
        )
        realtime.notify_on_commit(bundle_channel(env.pk), bundle.version)
        metrics.bundle_built(started, created=True)
        return PublishResult(bundle, created=True)


def team_bundles_rebuild(*, team_id: int, reason: str = "", actor=None) -> list[PublishResult]:
    """Publish every environment of the team whose policy changed. Safe to run twice."""
    return [
        bundle_publish(environment=env, reason=reason, actor=actor)
        for env in Environment.objects.filter(team_id=team_id).select_related("team").order_by("order", "pk")
    ]


def bundles_refresh(*, now: datetime | None = None) -> list[PublishResult]:
    """The periodic pass: re-issue bundles past half their lifetime, drop grants that ended,
    and publish environments that have none yet."""
    now = now or timezone.now()
    latest = PolicyBundle.objects.filter(environment=OuterRef("pk")).order_by("-version")
    envs = Environment.objects.select_related("team").annotate(
        latest_issued=Subquery(latest.values("issued_at")[:1]),
        latest_expires=Subquery(latest.values("expires_at")[:1]),
    )
    ended_grants = dict(
        AccessRequest.objects.filter(status=AccessRequestStatus.APPROVED, ends_at__lte=now)
        .values("environment_id")
        .annotate(last_end=Max("ends_at"))
        .values_list("environment_id", "last_end")
    )
    results = []
    for env in envs:
        if env.latest_issued is None:
            due, reason = True, "first bundle"
        elif bundle_needs_reissue(
            issued_at=env.latest_issued,
            expires_at=env.latest_expires,
            ttl_seconds=env.team.bundle_ttl_seconds,
            now=now,
        ):
            due, reason = True, REFRESH_REASON
        elif env.pk in ended_grants and ended_grants[env.pk] > env.latest_issued:
            due, reason = True, "production-access grant ended"
        else:
            due = False
        if due:
            results.append(bundle_publish(environment=env, reason=reason, now=now))
    return results


def latest_versions(environment_ids: list[int]) -> dict[int, int]:
    """{environment id: latest version} in one indexed query (the realtime fallback poll)."""
    return dict(
        PolicyBundle.objects.filter(environment_id__in=environment_ids)
        .values("environment_id")
        .annotate(v=Max("version"))
        .values_list("environment_id", "v")
    )


def bundle_channel_versions(channels: list[str]) -> dict[str, int]:
    ids = realtime.channel_ids(channels, CHANNEL_PREFIX)
    return {ids[env_id]: version for env_id, version in latest_versions(list(ids)).items()}


# --- history and diff (for the version list) -----------------------------------------------------


@dataclass(frozen=True)
class BundleVersion:
    bundle: PolicyBundle
    changes: list[ChangeRecord]  # the team's changes between the previous version and this one


def bundle_versions(*, environment: Environment, limit: int = 50) -> list[BundleVersion]:
    bundles = list(
        PolicyBundle.objects.filter(environment=environment)
        .select_related("created_by")
        .defer("jws", "content")
        .order_by("-version")[: limit + 1]
    )
    if not bundles:
        return []
    oldest = bundles[-1].issued_at if len(bundles) > limit else None
    records = ChangeRecord.objects.filter(team_id=environment.team_id, created_at__lte=bundles[0].issued_at)
    if oldest is not None:
        records = records.filter(created_at__gt=oldest)
    records = list(records.select_related("actor").order_by("-created_at")[:1000])
    out = []
    for i, bundle in enumerate(bundles[:limit]):
        previous = bundles[i + 1].issued_at if i + 1 < len(bundles) else None
        out.append(
            BundleVersion(
                bundle,
                [
                    r
                    for r in records
                    if r.created_at <= bundle.issued_at and (previous is None or r.created_at > previous)
                ],
            )
        )
    return out


@dataclass(frozen=True)
class DiffEntry:
    kind: str  # "added" | "removed" | "changed"
    path: str
    old: Any = None
    new: Any = None


def _keyed(items: list[Any]) -> dict[str, Any] | None:
    """Lists of objects with a name or id diff by that key; other lists by value."""
    for key in ("name", "id"):
        if items and all(isinstance(i, dict) and key in i for i in items):
            return {str(i[key]): i for i in items}
    return None


def bundle_diff(old: Any, new: Any, path: str = "") -> list[DiffEntry]:
    """Readable differences between two bundle contents: added, removed and changed paths."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[DiffEntry] = []
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(DiffEntry("added", sub, new=new[key]))
            elif key not in new:
                out.append(DiffEntry("removed", sub, old=old[key]))
            else:
                out.extend(bundle_diff(old[key], new[key], sub))
        return out
    if isinstance(old, list) and isinstance(new, list):
        old_k, new_k = _keyed(old), _keyed(new)
        if (old_k is not None or not old) and (new_k is not None or not new) and (old or new):
            return bundle_diff(old_k or {}, new_k or {}, path)
        if all(not isinstance(i, dict | list) for i in old + new):
            removed = [i for i in old if i not in new]
            added = [i for i in new if i not in old]
            return [DiffEntry("removed", f"{path}[{i}]", old=i) for i in removed] + [
                DiffEntry("added", f"{path}[{i}]", new=i) for i in added
            ]
    if old != new:
        return [DiffEntry("changed", path, old=old, new=new)]
    return []
