"""Import and export of a team's policy in the seed's YAML shape (`mcp_access`, `environments`, `rate_limits`).

Reading is pure: the YAML node tree is checked against the seed's shape and the models' field
validators, and every problem names its line. Applying replaces the team's policy for each block
the file holds, through the policy services (their validation and change history), in one
transaction; a dry run rolls that transaction back, so its report is an exact preview.
See docs/policy-yaml.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Prefetch, ProtectedError, RestrictedError

from governance.choices import Permission, RuleKind, ServerCategory, TargetKind
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
from governance.services.common import Action, change_record, check_policy_perm
from portal.models import Team

BLOCKS = ("mcp_access", "environments", "rate_limits")
DEFAULT_DENY = "deny"
ACCESS_AUTHORIZATION = "explicit_human_authorization_required"
ROLE_KEYS = ("allowed_servers", "forbidden_servers")
ENVIRONMENT_KEYS = ("access", "allowed_servers", "forbidden_patterns", "note")  # the order export writes
BINDING_KEYS = ("name", "path", "url", "permissions")
GLOBAL_LIMIT_KEYS = ("max_calls_per_session", "max_calls_per_minute", "pause_at_percent")
# The seed writes write-calls before read-calls; export keeps its order.
SERVER_LIMIT_KEYS = (
    "max_calls_per_session",
    "max_calls_per_minute",
    "max_write_calls_per_session",
    "max_read_calls_per_session",
    "max_rows_returned",
    "max_execution_time_seconds",
    "max_response_bytes",
)
KIND_KEYS = {RuleKind.ALLOWED: "allowed_servers", RuleKind.FORBIDDEN: "forbidden_servers"}

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


# --- errors -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the file: where (1-based line, dotted path) and what."""

    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyImportError(ValidationError):
    """The file cannot be imported; nothing was written. `problems` lists each one with its line.

    A ValidationError whose `messages` are the problems ("line 7: mcp_access.default: …"), so forms
    and views show it like any service refusal.
    """

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__([str(p) for p in problems])

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)

    @property
    def line(self) -> int | None:
        return self.problems[0].line if self.problems else None


# --- the report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportChange:
    action: str  # "added" | "changed" | "removed"
    kind: str  # "server", "role", "environment", "binding", "global rate limits", "server rate limits"
    name: str
    detail: str = ""

    SYMBOLS = {"added": "+", "changed": "~", "removed": "-"}

    def __str__(self) -> str:
        text = f"{self.SYMBOLS[self.action]} {self.kind} {self.name}".rstrip()
        return f"{text}: {self.detail}" if self.detail else text


@dataclass
class ImportReport:
    """What an import changed (or, for a dry run, would change), object by object."""

    team: str
    blocks: tuple[str, ...]
    dry_run: bool
    changes: list[ImportChange] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    def add(self, action: str, kind: str, name: str, detail: str = "") -> None:
        self.changes.append(ImportChange(action, kind, name, detail))

    @property
    def lines(self) -> list[str]:
        blocks = ", ".join(self.blocks)
        if self.dry_run:
            head = f"Dry run of an import of {blocks} into team {self.team}: nothing was saved."
        else:
            head = f"Imported {blocks} into team {self.team}."
        if not self.changes:
            return [head, "No changes: the team's policy already matches the file."]
        totals = ", ".join(f"{self.count(a)} {a}" for a in ("added", "changed", "removed"))
        return [
            head,
            *(str(c) for c in self.changes),
            f"{'Would be' if self.dry_run else 'In all'}: {totals}.",
        ]

    def __str__(self) -> str:
        return "\n".join(self.lines)


# --- the parsed file --------------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    line: int
    path: str


@dataclass(kw_only=True)
class Entry:
    """Something the file declares, with where it and each of its keys were written."""

    at: Where
    keys: dict[str, Where] = field(default_factory=dict)

    def where(self, key: str) -> Where:
        return self.keys.get(key, self.at)


@dataclass(kw_only=True)
class RoleSpec(Entry):
    name: str
    allowed: list[str]
    forbidden: list[str]
    items: dict[tuple[str, str], Where]  # (kind, server) → where that server is listed

    def servers(self, kind: str) -> list[str]:
        return self.allowed if kind == RuleKind.ALLOWED else self.forbidden


@dataclass(kw_only=True)
class BindingSpec(Entry):
    server: str
    target_kind: str | None  # None: neither path nor url given
    target: str
    permission: str


@dataclass(kw_only=True)
class EnvironmentSpec(Entry):
    name: str
    requires_authorization: bool
    bindings: list[BindingSpec]
    forbidden_patterns: list[str]
    note: str


@dataclass(kw_only=True)
class LimitSpec(Entry):
    server: str | None  # None for the global limits
    values: dict[str, int]


@dataclass(kw_only=True)
class AccessBlock(Entry):
    roles: list[RoleSpec]


@dataclass(kw_only=True)
class EnvironmentsBlock(Entry):
    environments: list[EnvironmentSpec]


@dataclass(kw_only=True)
class RateLimitsBlock(Entry):
    global_limits: LimitSpec | None
    per_server: list[LimitSpec]


@dataclass
class PolicyDocument:
    mcp_access: AccessBlock | None = None
    environments: EnvironmentsBlock | None = None
    rate_limits: RateLimitsBlock | None = None

    @property
    def blocks(self) -> tuple[str, ...]:
        return tuple(b for b in BLOCKS if getattr(self, b) is not None)

    def server_refs(self) -> dict[str, Where]:
        """Every server the file names, in order of first mention, with where."""
        refs: dict[str, Where] = {}
        if self.mcp_access:
            for role in self.mcp_access.roles:
                for (_, slug), where in role.items.items():
                    refs.setdefault(slug, where)
        if self.environments:
            for env in self.environments.environments:
                for binding in env.bindings:
                    refs.setdefault(binding.server, binding.where("name"))
        if self.rate_limits:
            for limits in self.rate_limits.per_server:
                refs.setdefault(limits.server, limits.at)
        return refs


# --- reading (pure) ---------------------------------------------------------------------------


_UNREADABLE = object()


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class _Reader:
    """Walks the composed YAML nodes against the seed's shape, collecting every problem with its line."""

    def __init__(self, loader: yaml.SafeLoader):
        self.loader = loader
        self.problems: list[Problem] = []
        self.unreadable: list[yaml.Node] = []

    def problem(self, where: Where, message: str) -> None:
        self.problems.append(Problem(where.line, where.path, message))

    @staticmethod
    def at(node: yaml.Node, path: str) -> Where:
        return Where(node.start_mark.line + 1, path)

    def value(self, node: yaml.Node) -> Any:
        """A scalar's value as YAML types it; _UNREADABLE (reported once) if YAML cannot build it."""
        try:
            return self.loader.construct_object(node, deep=True)
        except Exception as exc:  # a tag SafeLoader cannot build, or a malformed !!timestamp and the like
            if node not in self.unreadable:
                self.unreadable.append(node)
                problem = getattr(exc, "problem", None) or str(exc)
                self.problem(self.at(node, ""), f"cannot read {node.value!r} ({node.tag}): {problem}")
            return _UNREADABLE

    def describe(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        value = self.value(node)
        if value is None:
            return "nothing (null)"
        if isinstance(value, bool):
            return f"the boolean {node.value}"
        if isinstance(value, (int, float)):
            return f"the number {node.value}"
        if isinstance(value, str):
            return f"the text {value!r}"
        return f"{node.value!r}"

    def wrong_type(self, node: yaml.Node, path: str, expected: str) -> None:
        if node not in self.unreadable:  # else already reported
            self.problem(self.at(node, path), f"expected {expected}, got {self.describe(node)}")

    # Shapes.

    def pairs(self, node: yaml.Node, path: str) -> list[tuple[str, Where, yaml.Node]] | None:
        """A mapping's (key, where, value node) in file order; keys must be unique text."""
        if not isinstance(node, yaml.MappingNode):
            self.wrong_type(node, path, "a mapping")
            return None
        result, seen = [], {}
        for key_node, value_node in node.value:
            key = self.value(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                if key_node in self.unreadable:
                    continue
                self.problem(self.at(key_node, path), f"keys must be names, got {self.describe(key_node)}")
                continue
            where = self.at(key_node, _join(path, key))
            if key in seen:
                self.problem(where, f"{key!r} appears twice (first on line {seen[key].line})")
                continue
            seen[key] = where
            result.append((key, where, value_node))
        return result

    def fields(
        self,
        node: yaml.Node,
        path: str,
        owner: Where,
        *,
        required: tuple[str, ...] = (),
        optional: tuple[str, ...] = (),
    ) -> dict[str, tuple[Where, yaml.Node]] | None:
        """A mapping with a fixed set of keys: unknown keys and missing required ones are problems."""
        pairs = self.pairs(node, path)
        if pairs is None:
            return None
        allowed = required + optional
        result = {}
        for key, where, value_node in pairs:
            if key not in allowed:
                self.problem(where, f"unknown key {key!r}; expected {', '.join(allowed)}")
                continue
            result[key] = (where, value_node)
        for key in required:
            if key not in result:
                self.problem(owner, f"{key} is missing")
        return result

    def text(self, node: yaml.Node, path: str, *, non_empty: bool = True) -> str | None:
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(value, str) or (non_empty and not value.strip()):
            self.wrong_type(node, path, "a non-empty text" if non_empty else "a text")
            return None
        return value

    def integer(self, node: yaml.Node, path: str) -> int | None:
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(value, int) or isinstance(value, bool):
            self.wrong_type(node, path, "a whole number")
            return None
        return value

    def sequence(self, node: yaml.Node, path: str) -> list[yaml.Node] | None:
        if not isinstance(node, yaml.SequenceNode):
            self.wrong_type(node, path, "a list")
            return None
        return list(node.value)

    def model_value(self, model: type[models.Model], field_name: str, value: Any, where: Where) -> bool:
        """Run the model field's own validators (slug shape, limits ≥ 1, percent ≤ 100, lengths)."""
        try:
            model._meta.get_field(field_name).clean(value, None)
        except ValidationError as exc:
            self.problem(where, f"{value!r} is not valid: {' '.join(exc.messages)}")
            return False
        return True

    def server_name(self, node: yaml.Node, path: str) -> str | None:
        name = self.text(node, path)
        if name is not None and self.model_value(McpServer, "slug", name, self.at(node, path)):
            return name
        return None

    # The document.

    def document(self, root: yaml.Node | None) -> PolicyDocument:
        doc = PolicyDocument()
        expected = ", ".join(BLOCKS)
        if root is None:
            self.problems.append(Problem(None, "", f"the file is empty; expected one or more of {expected}"))
            return doc
        top = self.fields(root, "", Where(1, ""), optional=BLOCKS)
        if top is None:
            return doc
        if not top and not self.problems:
            self.problem(self.at(root, ""), f"none of {expected} is in the file")
        if "mcp_access" in top:
            doc.mcp_access = self.access_block(*top["mcp_access"])
        if "environments" in top:
            doc.environments = self.environments_block(*top["environments"])
        if "rate_limits" in top:
            doc.rate_limits = self.rate_limits_block(*top["rate_limits"])
        return doc

    def access_block(self, owner: Where, node: yaml.Node) -> AccessBlock:
        path = owner.path
        block = AccessBlock(at=owner, roles=[])
        fields = self.fields(node, path, owner, required=("default", "roles")) or {}
        if "default" in fields:
            where, value_node = fields["default"]
            block.keys["default"] = where
            default = self.text(value_node, where.path)
            if default is not None and default != DEFAULT_DENY:
                self.problem(
                    where,
                    f"the default must be {DEFAULT_DENY} (anything not allowed is refused), got {default!r}",
                )
        if "roles" in fields:
            where, value_node = fields["roles"]
            block.keys["roles"] = where
            for name, role_where, role_node in self.pairs(value_node, where.path) or []:
                role = self.role(name, role_where, role_node)
                if role is not None:
                    block.roles.append(role)
        return block

    def role(self, name: str, owner: Where, node: yaml.Node) -> RoleSpec | None:
        valid_name = self.model_value(AgentRole, "name", name, owner)
        fields = self.fields(node, owner.path, owner, required=ROLE_KEYS)
        if fields is None or not valid_name:
            return None
        role = RoleSpec(at=owner, name=name, allowed=[], forbidden=[], items={})
        listed: dict[str, tuple[str, Where]] = {}
        for kind, key in KIND_KEYS.items():
            if key not in fields:
                continue
            where, list_node = fields[key]
            role.keys[key] = where
            for index, item in enumerate(self.sequence(list_node, where.path) or []):
                item_path = _join(where.path, index)
                slug = self.server_name(item, item_path)
                if slug is None:
                    continue
                item_where = self.at(item, item_path)
                if slug in listed:
                    first_key, first = listed[slug]
                    both = "listed twice in" if first_key == key else f"both in {first_key} and"
                    self.problem(
                        item_where,
                        f"{slug} is {both} {key} of {name} (line {first.line}); "
                        "a server is allowed or forbidden, once",
                    )
                    continue
                listed[slug] = (key, item_where)
                role.servers(kind).append(slug)
                role.items[(kind, slug)] = item_where
        return role

    def environments_block(self, owner: Where, node: yaml.Node) -> EnvironmentsBlock:
        block = EnvironmentsBlock(at=owner, environments=[])
        for name, where, env_node in self.pairs(node, owner.path) or []:
            env = self.environment(name, where, env_node)
            if env is not None:
                block.environments.append(env)
        return block

    def environment(self, name: str, owner: Where, node: yaml.Node) -> EnvironmentSpec | None:
        valid_name = self.model_value(Environment, "name", name, owner)
        fields = self.fields(
            node,
            owner.path,
            owner,
            required=("allowed_servers",),
            optional=("access", "forbidden_patterns", "note"),
        )
        if fields is None or not valid_name:
            return None
        env = EnvironmentSpec(
            at=owner, name=name, requires_authorization=False, bindings=[], forbidden_patterns=[], note=""
        )
        env.keys.update({key: where for key, (where, _) in fields.items()})
        if "access" in fields:
            where, value_node = fields["access"]
            access = self.text(value_node, where.path)
            if access is not None and access != ACCESS_AUTHORIZATION:
                self.problem(
                    where,
                    f"unknown access {access!r}; the one value is {ACCESS_AUTHORIZATION} "
                    "(leave access out when no authorization is needed)",
                )
            env.requires_authorization = True
        if "allowed_servers" in fields:
            where, list_node = fields["allowed_servers"]
            seen: dict[str, Where] = {}
            for index, item in enumerate(self.sequence(list_node, where.path) or []):
                binding = self.binding(item, _join(where.path, index))
                if binding is None:
                    continue
                if binding.server in seen:
                    self.problem(
                        binding.where("name"),
                        f"{binding.server} is listed twice in {name} "
                        f"(first on line {seen[binding.server].line})",
                    )
                    continue
                seen[binding.server] = binding.where("name")
                env.bindings.append(binding)
        if "forbidden_patterns" in fields:
            where, list_node = fields["forbidden_patterns"]
            items = self.sequence(list_node, where.path)
            if items == []:
                self.problem(where, "an empty list; leave forbidden_patterns out when there are none")
            for index, item in enumerate(items or []):
                pattern = self.text(item, _join(where.path, index))
                if pattern is not None:
                    env.forbidden_patterns.append(pattern.strip())
        if "note" in fields:
            where, value_node = fields["note"]
            env.note = self.text(value_node, where.path) or ""
        return env

    def binding(self, node: yaml.Node, path: str) -> BindingSpec | None:
        owner = self.at(node, path)
        fields = self.fields(node, path, owner, required=("name", "permissions"), optional=("path", "url"))
        if fields is None:
            return None
        binding = BindingSpec(at=owner, server="", target_kind=None, target="", permission="")
        binding.keys.update({key: where for key, (where, _) in fields.items()})
        ok = "name" in fields and "permissions" in fields
        if "name" in fields:
            where, value_node = fields["name"]
            binding.server = self.server_name(value_node, where.path) or ""
            ok = ok and bool(binding.server)
        if "permissions" in fields:
            where, value_node = fields["permissions"]
            permission = self.text(value_node, where.path)
            if permission is not None and permission not in Permission.values:
                self.problem(
                    where, f"unknown permission {permission!r}; use {' or '.join(Permission.values)}"
                )
                permission = None
            binding.permission = permission or ""
            ok = ok and permission is not None
        if "path" in fields and "url" in fields:
            self.problem(fields["url"][0], "give a path or a url, not both")
            ok = False
        for kind in (TargetKind.PATH, TargetKind.URL):
            if kind in fields:
                where, value_node = fields[kind]
                target = self.text(value_node, where.path)
                if target is None:
                    ok = False
                elif binding.target_kind is None:
                    binding.target_kind, binding.target = kind, target
        return binding if ok else None

    def rate_limits_block(self, owner: Where, node: yaml.Node) -> RateLimitsBlock:
        block = RateLimitsBlock(at=owner, global_limits=None, per_server=[])
        fields = self.fields(node, owner.path, owner, optional=("global", "per_server")) or {}
        block.keys.update({key: where for key, (where, _) in fields.items()})
        if "global" in fields:
            block.global_limits = self.limits(None, *fields["global"], GlobalRateLimit, GLOBAL_LIMIT_KEYS)
        if "per_server" in fields:
            where, servers_node = fields["per_server"]
            pairs = self.pairs(servers_node, where.path)
            if pairs == []:
                self.problem(where, "an empty mapping; leave per_server out when no server has limits")
            for name, server_where, limits_node in pairs or []:
                if not self.model_value(McpServer, "slug", name, server_where):
                    continue
                limits = self.limits(name, server_where, limits_node, ServerRateLimit, SERVER_LIMIT_KEYS)
                if limits is not None:
                    block.per_server.append(limits)
        return block

    def limits(
        self,
        server: str | None,
        owner: Where,
        node: yaml.Node,
        model: type[models.Model],
        keys: tuple[str, ...],
    ) -> LimitSpec | None:
        fields = self.fields(node, owner.path, owner, optional=keys)
        if fields is None:
            return None
        if not fields and isinstance(node, yaml.MappingNode) and not node.value:
            self.problem(owner, "no limits; set at least one, or leave the entry out")
            return None
        spec = LimitSpec(at=owner, server=server, values={})
        for key, (where, value_node) in fields.items():
            spec.keys[key] = where
            value = self.integer(value_node, where.path)
            if value is not None and self.model_value(model, key, value, where):
                spec.values[key] = value
        return spec


def policy_parse(text: str) -> PolicyDocument:
    """Read and check a policy file without touching the database. Raises PolicyImportError."""
    loader = None
    try:
        try:
            loader = yaml.SafeLoader(text)
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise PolicyImportError([_syntax_problem(exc, text)]) from exc
        reader = _Reader(loader)
        doc = reader.document(root)
    finally:
        if loader is not None:
            loader.dispose()
    if reader.problems:
        raise PolicyImportError(reader.problems)
    return doc


def _syntax_problem(exc: yaml.YAMLError, text: str) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        detail = exc.problem or str(exc)
        if exc.context:
            seen_at = f", line {exc.context_mark.line + 1}" if exc.context_mark else ""
            detail = f"{detail} ({exc.context}{seen_at})"
        return Problem(mark.line + 1 if mark else None, "", f"YAML syntax error: {detail}")
    position = getattr(exc, "position", None)  # a ReaderError: a character YAML does not allow
    line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
    return Problem(line, "", f"YAML syntax error: {str(exc).splitlines()[0]}")


# --- applying ---------------------------------------------------------------------------------


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
            before = {KIND_KEYS[k]: [r.server.slug for r in rules] for k, rules in current.items()}
            if self.role_rules(role, spec, current=current):
                after = {KIND_KEYS[k]: spec.servers(k) for k in KIND_KEYS}
                self.report.add("changed", "role", spec.name, _diff(before, after))

    def role_rules(
        self, role: AgentRole, spec: RoleSpec, *, current: dict[str, list[RoleServerRule]]
    ) -> bool:
        """Make the role's lists what the file says, in its order. Returns whether anything changed.

        Rules keep the order they were added in, so a list that changes order past some point is
        rebuilt from there; every removal comes before any addition, so a server can move between lists.
        """
        additions: list[tuple[str, str]] = []
        removals: list[RoleServerRule] = []
        for kind in KIND_KEYS:
            have = [rule.server.slug for rule in current[kind]]
            want = spec.servers(kind)
            if have == want:
                continue
            kept = [slug for slug in have if slug in want]
            prefix = 0
            while prefix < len(kept) and kept[prefix] == want[prefix]:
                prefix += 1
            staying = set(kept[:prefix])
            removals += [rule for rule in current[kind] if rule.server.slug not in staying]
            additions += [(kind, slug) for slug in want[prefix:]]
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
        for order, bspec in enumerate(spec.bindings):
            binding = current.get(bspec.server)
            kind = bspec.target_kind or (binding.target_kind if binding else TargetKind.PATH)
            data = {
                "target_kind": kind,
                "target": bspec.target,
                "permission": bspec.permission,
                "order": order,
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
                action=Action.IMPORT,
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


# --- export -----------------------------------------------------------------------------------

_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./:@+-]*")


def _scalar(value: str, *, flow: bool = False) -> str:
    """`value` plain where YAML reads it back as the same text, else double-quoted."""
    if _PLAIN.fullmatch(value):
        probe = f"[{value}]" if flow else f"k: {value}"
        if yaml.safe_load(probe) == ([value] if flow else {"k": value}):
            return value
    return _quoted(value)


def _quoted(value: str) -> str:
    for candidate in (json.dumps(value, ensure_ascii=False), json.dumps(value)):
        if yaml.safe_load(f"k: {candidate}") == {"k": value}:
            return candidate
    return yaml.safe_dump(value, default_style='"', width=float("inf"), allow_unicode=True).strip()


def _flow(values: list[str]) -> str:
    return f"[{', '.join(_scalar(v, flow=True) for v in values)}]"


def _export_access(team: Team) -> list[str]:
    rules = Prefetch("rules", queryset=RoleServerRule.objects.select_related("server").order_by("pk"))
    roles = list(AgentRole.objects.filter(team=team).order_by("pk").prefetch_related(rules))
    lines = ["mcp_access:", f"  default: {DEFAULT_DENY}", ""]
    if not roles:
        return [*lines, "  roles: {}"]
    lines.append("  roles:")
    for index, role in enumerate(roles):
        if index:
            lines.append("")
        lines.append(f"    {_scalar(role.name)}:")
        for kind, key in KIND_KEYS.items():
            lines.append(f"      {key}: {_flow([r.server.slug for r in role.rules.all() if r.kind == kind])}")
    return lines


def _export_environments(team: Team) -> list[str]:
    bindings = Prefetch(
        "bindings", queryset=ServerBinding.objects.select_related("server").order_by("order", "pk")
    )
    envs = list(Environment.objects.filter(team=team).prefetch_related(bindings))
    if not envs:
        return ["environments: {}"]
    lines = ["environments:"]
    for index, env in enumerate(envs):
        if index:
            lines.append("")
        lines.append(f"  {_scalar(env.name)}:")
        if env.requires_authorization:
            lines.append(f"    access: {ACCESS_AUTHORIZATION}")
        env_bindings = list(env.bindings.all())
        lines.append("    allowed_servers:" if env_bindings else "    allowed_servers: []")
        for binding in env_bindings:
            lines.append(f"      - name: {_scalar(binding.server.slug)}")
            if binding.target:
                lines.append(f"        {binding.target_kind}: {_scalar(binding.target)}")
            lines.append(f"        permissions: {binding.permission}")
        if env.forbidden_patterns:
            lines.append("    forbidden_patterns:")
            lines += [f"      - {_quoted(pattern)}" for pattern in env.forbidden_patterns]
        if env.note:
            lines.append(f"    note: {_quoted(env.note)}")
    return lines


def _export_rate_limits(team: Team) -> list[str]:
    limits = GlobalRateLimit.objects.filter(team=team).first()
    global_values = {k: getattr(limits, k) for k in GLOBAL_LIMIT_KEYS} if limits else {}
    per_server = list(ServerRateLimit.objects.filter(team=team).select_related("server").order_by("pk"))
    lines = ["rate_limits:"]
    if any(v is not None for v in global_values.values()):
        lines.append("  global:")
        lines += [f"    {k}: {v}" for k, v in global_values.items() if v is not None]
    if per_server:
        if len(lines) > 1:
            lines.append("")
        lines.append("  per_server:")
        for limit in per_server:
            lines.append(f"    {_scalar(limit.server.slug)}:")
            lines += [
                f"      {k}: {getattr(limit, k)}" for k in SERVER_LIMIT_KEYS if getattr(limit, k) is not None
            ]
    return lines if len(lines) > 1 else ["rate_limits: {}"]


def policy_export(*, team: Team) -> str:
    """The team's policy as YAML in the seed's shape and style; policy_import reads it back unchanged."""
    header = [
        f"# MCP governance policy of team {team.slug}: mcp_access, environments and rate_limits.",
        "# Importing this file replaces the team's policy for each block it holds (docs/policy-yaml.md).",
    ]
    blocks = [_export_access(team), _export_environments(team), _export_rate_limits(team)]
    return "\n\n".join("\n".join(lines) for lines in [header, *blocks]) + "\n"


__all__ = [
    "ImportChange",
    "ImportReport",
    "PolicyDocument",
    "PolicyImportError",
    "Problem",
    "infer_category",
    "policy_export",
    "policy_import",
    "policy_parse",
]
