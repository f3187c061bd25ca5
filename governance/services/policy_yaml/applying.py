"""Applying a read policy file: each block in it replaces the team's policy for that block, through the
policy services (their validation and change history), in one transaction."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Prefetch, ProtectedError, RestrictedError

from governance.choices import RuleKind, ServerCategory, TargetKind
from governance.models import (
    AgentRole,
    Environment,
    GlobalRateLimit,
    McpServer,
    RoleServerRule,
    ServerBinding,
    ServerRateLimit,
)
from governance.services import environments as environment_services
from governance.services import limits as limit_services
from governance.services import roles as role_services
from governance.services import servers as server_services
from governance.services.common import check_policy_perm
from governance.services.drafts import draftable
from governance.services.policy_yaml.document import (
    ACCESS_AUTHORIZATION,
    GLOBAL_LIMIT_KEYS,
    KIND_KEYS,
    SERVER_LIMIT_KEYS,
    AccessBlock,
    EnvironmentsBlock,
    EnvironmentSpec,
    PolicyDocument,
    PolicyImportError,
    Problem,
    RateLimitsBlock,
    RoleSpec,
    Where,
)
from governance.services.policy_yaml.parsing import policy_parse
from governance.services.policy_yaml.report import ImportReport
from portal.choices import ChangeEventType
from portal.models import Team
from portal.services import change_record

# Category of a server first met in a file, from its name: the first pattern that matches wins,
# then any word of the name (local_filesystem, staging_database).
CATEGORY_PATTERNS = (
    ("filesystem*", ServerCategory.FILESYSTEM),
    ("shell*", ServerCategory.SHELL_EXECUTION),
    ("database*", ServerCategory.DATABASE),
    ("*_api", ServerCategory.API),
    ("cloud*", ServerCategory.CLOUD_INFRASTRUCTURE),
)


def infer_category(name: str) -> str:
    """The catalogue category a server name suggests (github_api → api, local_database → database)."""
    for pattern, category in CATEGORY_PATTERNS:
        if fnmatchcase(name, pattern):
            return category
    for word in re.split(r"[_-]", name)[1:]:
        for pattern, category in CATEGORY_PATTERNS:
            if pattern.endswith("*") and fnmatchcase(word, pattern):
                return category
    return ServerCategory.OTHER


def _show(value: Any) -> str:
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(_show(v) for v in value)}]"
    return str(value)


def _diff(current: dict[str, Any], wanted: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    labels = labels or {}
    return "; ".join(
        f"{labels.get(k, k)} {_show(current[k])} -> {_show(v)}" for k, v in wanted.items() if current[k] != v
    )


def _described(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_show(v)}" for k, v in values.items() if v is not None)


class _Applier:
    """Makes the team's policy what the document says, block by block, through the services."""

    def __init__(self, *, team: Team, actor, report: ImportReport):
        self.team, self.actor, self.report = team, actor, report
        self.servers: dict[str, McpServer] = {}

    @contextmanager
    def at(self, where: Where, fields: dict[str, Where] | None = None, *, doing: str = "") -> Iterator[None]:
        """Turn a service's refusal into a PolicyImportError naming the line it concerns.

        `fields` maps model fields to where the file sets them; `doing` says what was being done.
        """
        prefix = f"{doing}: " if doing else ""
        try:
            yield
        except ValidationError as exc:
            problems = []
            for name, messages in (
                exc.message_dict.items() if hasattr(exc, "error_dict") else [("", exc.messages)]
            ):
                spot = (fields or {}).get(name, where)
                text = prefix + " ".join(messages)
                if name == "requires_authorization":
                    text += f" Add `access: {ACCESS_AUTHORIZATION}`."
                problems.append(Problem(spot.line, spot.path, text))
            raise PolicyImportError(problems) from exc
        except (ProtectedError, RestrictedError) as exc:
            blocking = exc.protected_objects if isinstance(exc, ProtectedError) else exc.restricted_objects
            counts: dict[str, int] = {}
            for obj in blocking:
                label = str(obj._meta.verbose_name_plural)
                counts[label] = counts.get(label, 0) + 1
            used_by = ", ".join(f"{n} {label}" for label, n in counts.items())
            problem = Problem(where.line, where.path, f"{prefix}it is still used by {used_by}")
            raise PolicyImportError([problem]) from exc

    def apply(self, doc: PolicyDocument) -> None:
        self.ensure_servers(doc.server_refs())
        if doc.mcp_access is not None:
            self.access(doc.mcp_access)
        if doc.environments is not None:
            self.environments(doc.environments)
        if doc.rate_limits is not None:
            self.rate_limits(doc.rate_limits)

    def ensure_servers(self, refs: dict[str, Where]) -> None:
        self.servers = {s.slug: s for s in McpServer.objects.filter(team=self.team, slug__in=list(refs))}
        for slug, where in refs.items():
            if slug in self.servers:
                continue
            category = infer_category(slug)
            with self.at(where):
                self.servers[slug] = server_services.server_create(
                    team=self.team, actor=self.actor, slug=slug, category=category
                )
            self.report.add("added", "server", slug, f"new in the catalogue (category {category})")

    # mcp_access

    def access(self, block: AccessBlock) -> None:
        rules = Prefetch("rules", queryset=RoleServerRule.objects.select_related("server").order_by("pk"))
        roles = {r.name: r for r in AgentRole.objects.filter(team=self.team).prefetch_related(rules)}
        wanted = {spec.name for spec in block.roles}
        for name, role in roles.items():
            if name not in wanted:
                with self.at(block.where("roles"), doing=f"{name} is not in the file, but cannot be removed"):
                    role_services.role_delete(role=role, actor=self.actor)
                self.report.add("removed", "role", name)
        for spec in block.roles:
            role = roles.get(spec.name)
            if role is None:
                with self.at(spec.at, {"name": spec.at}):
                    role = role_services.role_create(team=self.team, name=spec.name, actor=self.actor)
                self.role_rules(role, spec, current={RuleKind.ALLOWED: [], RuleKind.FORBIDDEN: []})
                self.report.add(
                    "added",
                    "role",
                    spec.name,
                    "; ".join(f"{key} {_show(spec.servers(kind))}" for kind, key in KIND_KEYS.items()),
                )
                continue
            current = {kind: [r for r in role.rules.all() if r.kind == kind] for kind in KIND_KEYS}
            before = {KIND_KEYS[k]: sorted(r.server.slug for r in rules) for k, rules in current.items()}
            if self.role_rules(role, spec, current=current):
                after = {KIND_KEYS[k]: sorted(spec.servers(k)) for k in KIND_KEYS}
                self.report.add("changed", "role", spec.name, _diff(before, after))

    def role_rules(
        self, role: AgentRole, spec: RoleSpec, *, current: dict[str, list[RoleServerRule]]
    ) -> bool:
        """Make the role's lists what the file says. Returns whether anything changed.

        The lists are sets (the bundle sorts them), so only membership counts, never the order;
        every removal comes before any addition, so a server can move between lists.
        """
        additions: list[tuple[str, str]] = []
        removals: list[RoleServerRule] = []
        for kind in KIND_KEYS:
            have = {rule.server.slug for rule in current[kind]}
            want = spec.servers(kind)
            removals += [rule for rule in current[kind] if rule.server.slug not in want]
            additions += [(kind, slug) for slug in want if slug not in have]
        for rule in removals:
            with self.at(spec.at):
                role_services.role_server_remove(rule=rule, actor=self.actor)
        for kind, slug in additions:
            where = spec.items[(kind, slug)]
            with self.at(where, {"server": where, "kind": where}):
                role_services.role_server_add(
                    role=role, server=self.servers[slug], kind=kind, actor=self.actor
                )
        return bool(removals or additions)

    # environments

    def environments(self, block: EnvironmentsBlock) -> None:
        bindings = Prefetch("bindings", queryset=ServerBinding.objects.select_related("server"))
        envs = {e.name: e for e in Environment.objects.filter(team=self.team).prefetch_related(bindings)}
        wanted = {spec.name for spec in block.environments}
        for name, env in envs.items():
            if name not in wanted:
                with self.at(block.at, doing=f"{name} is not in the file, but cannot be removed"):
                    environment_services.environment_delete(environment=env, actor=self.actor)
                self.report.add("removed", "environment", name)
        for order, spec in enumerate(block.environments):
            data = {
                "requires_authorization": spec.requires_authorization,
                "forbidden_patterns": spec.forbidden_patterns,
                "note": spec.note,
                "order": order,
            }
            fields = {
                "name": spec.at,
                "requires_authorization": spec.where("access"),
                "is_production": spec.where("access"),
                "forbidden_patterns": spec.where("forbidden_patterns"),
                "note": spec.where("note"),
            }
            env = envs.get(spec.name)
            if env is None:
                with self.at(spec.at, fields):
                    env = environment_services.environment_create(
                        team=self.team, actor=self.actor, name=spec.name, **data
                    )
                self.report.add(
                    "added",
                    "environment",
                    spec.name,
                    _described(
                        {
                            "access": ACCESS_AUTHORIZATION if spec.requires_authorization else None,
                            "forbidden_patterns": spec.forbidden_patterns or None,
                        }
                    ),
                )
                self.bindings(env, spec, current={})
                continue
            current = {key: getattr(env, key) for key in data}
            if current != data:
                with self.at(spec.at, fields):
                    environment_services.environment_update(environment=env, actor=self.actor, **data)
                self.report.add(
                    "changed",
                    "environment",
                    spec.name,
                    _diff(
                        current,
                        data,
                        {"requires_authorization": "access (authorization required)", "order": "position"},
                    ),
                )
            self.bindings(env, spec, current={b.server.slug: b for b in env.bindings.all()})

    def bindings(self, env: Environment, spec: EnvironmentSpec, *, current: dict[str, ServerBinding]) -> None:
        wanted = {b.server for b in spec.bindings}
        for slug, binding in current.items():
            if slug not in wanted:
                with self.at(spec.where("allowed_servers"), doing=f"{slug} cannot be unbound"):
                    environment_services.binding_delete(binding=binding, actor=self.actor)
                self.report.add("removed", "binding", f"{env.name}/{slug}")
        # The export lists bindings by (position, server); a file in that sequence moves none of them.
        ranked = sorted(
            (b for slug, b in current.items() if slug in wanted), key=lambda b: (b.order, b.server.slug)
        )
        in_sequence = [b.server.slug for b in ranked] == [
            b.server for b in spec.bindings if b.server in current
        ]
        for order, bspec in enumerate(spec.bindings):
            binding = current.get(bspec.server)
            kind = bspec.target_kind or (binding.target_kind if binding else TargetKind.PATH)
            data = {
                "target_kind": kind,
                "target": bspec.target,
                "permission": bspec.permission,
                "order": binding.order if binding is not None and in_sequence else order,
            }
            target_where = bspec.where(bspec.target_kind or "name")
            fields = {
                "server": bspec.where("name"),
                "target": target_where,
                "target_kind": target_where,
                "permission": bspec.where("permissions"),
            }
            name = f"{env.name}/{bspec.server}"
            if binding is None:
                with self.at(bspec.at, fields):
                    environment_services.binding_set(
                        environment=env, server=self.servers[bspec.server], actor=self.actor, **data
                    )
                where_to = f"{kind} {bspec.target}, " if bspec.target else ""
                self.report.add("added", "binding", name, f"{where_to}{bspec.permission}")
                continue
            have = {key: getattr(binding, key) for key in data}
            if have != data:
                with self.at(bspec.at, fields):
                    environment_services.binding_set(
                        environment=env, server=self.servers[bspec.server], actor=self.actor, **data
                    )
                self.report.add(
                    "changed",
                    "binding",
                    name,
                    _diff(have, data, {"permission": "permissions", "order": "position"}),
                )

    # rate_limits

    def rate_limits(self, block: RateLimitsBlock) -> None:
        spec = block.global_limits
        wanted = {key: (spec.values.get(key) if spec else None) for key in GLOBAL_LIMIT_KEYS}
        limits = GlobalRateLimit.objects.filter(team=self.team).first()
        current = {key: getattr(limits, key) if limits else None for key in GLOBAL_LIMIT_KEYS}
        if current != wanted:
            where = spec.at if spec else block.at
            with self.at(where, spec.keys if spec else None):
                limit_services.global_limits_set(team=self.team, actor=self.actor, **wanted)
            self.report.add("changed", "global rate limits", "", _diff(current, wanted))

        existing = {
            limit.server.slug: limit
            for limit in ServerRateLimit.objects.filter(team=self.team).select_related("server")
        }
        listed = {spec.server for spec in block.per_server}
        for slug, limit in existing.items():
            if slug not in listed:
                with self.at(block.where("per_server"), doing=f"the limits of {slug} cannot be removed"):
                    limit_services.server_limits_delete(limits=limit, actor=self.actor)
                self.report.add("removed", "server rate limits", slug)
        for spec in block.per_server:
            wanted = {key: spec.values.get(key) for key in SERVER_LIMIT_KEYS}
            limit = existing.get(spec.server)
            current = {key: getattr(limit, key) if limit else None for key in SERVER_LIMIT_KEYS}
            if current == wanted:
                continue
            with self.at(spec.at, spec.keys):
                limit_services.server_limits_set(
                    team=self.team, server=self.servers[spec.server], actor=self.actor, **wanted
                )
            if limit is None:
                self.report.add("added", "server rate limits", spec.server, _described(wanted))
            else:
                self.report.add("changed", "server rate limits", spec.server, _diff(current, wanted))


@draftable
def policy_import(*, team: Team, text: str, actor=None, dry_run: bool = False) -> ImportReport:
    """Make the team's policy for each block in `text` what the file says (a replace, not a merge).

    Every write goes through the policy services, in one transaction, with one extra "import"
    ChangeRecord summing it up. Raises PolicyImportError (naming the line) and writes nothing if the
    file is bad; with `dry_run` nothing is written either and the report is the preview.
    """
    check_policy_perm(actor, team)
    doc = policy_parse(text)
    report = ImportReport(team=team.slug, blocks=doc.blocks, dry_run=dry_run)
    with transaction.atomic():
        # One import at a time per team, so the report describes exactly what was written.
        Team.objects.select_for_update().filter(pk=team.pk).first()
        _Applier(team=team, actor=actor, report=report).apply(doc)
        if report.changed and not dry_run:
            change_record(
                team=team,
                actor=actor,
                event_type=ChangeEventType.POLICY_IMPORTED,
                object_type="policy",
                object_repr=", ".join(doc.blocks),
                summary=f"Policy imported from YAML: {report.count('added')} added, "
                f"{report.count('changed')} changed, {report.count('removed')} removed",
                changes={
                    action: [f"{c.kind} {c.name}".strip() for c in report.changes if c.action == action]
                    for action in ("added", "changed", "removed")
                    if report.count(action)
                },
            )
        if dry_run:
            transaction.set_rollback(True)
    return report
