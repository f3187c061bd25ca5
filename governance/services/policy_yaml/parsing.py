"""Reading a policy file (pure, no database): YAML nodes checked against the seed's shape and the
models' field validators; every problem is collected with its line."""

from __future__ import annotations

from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import models

from governance.choices import Permission, TargetKind
from governance.models import AgentRole, Environment, GlobalRateLimit, McpServer, ServerRateLimit
from governance.services.policy_yaml.document import (
    ACCESS_AUTHORIZATION,
    BLOCKS,
    DEFAULT_DENY,
    GLOBAL_LIMIT_KEYS,
    KIND_KEYS,
    ROLE_KEYS,
    SERVER_LIMIT_KEYS,
    AccessBlock,
    BindingSpec,
    EnvironmentsBlock,
    EnvironmentSpec,
    LimitSpec,
    PolicyDocument,
    PolicyImportError,
    Problem,
    RateLimitsBlock,
    RoleSpec,
    Where,
)
from portal.parsers import InputError, yaml_check_depth

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
            yaml_check_depth(text)  # composing recurses per nesting level: refuse deep documents first
            loader = yaml.SafeLoader(text)
            root = loader.get_single_node()
        except InputError as exc:
            raise PolicyImportError([Problem(None, "", str(exc))]) from exc
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
