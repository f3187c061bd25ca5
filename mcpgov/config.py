""".mcp.json-style MCP configurations: ``{"mcpServers": {...}}`` files and the seed's ``mcp-config.yaml``.

The seed's shape is ``environments: {env: {allowed_servers, forbidden_patterns}}``. Read by the environment
gate (``mcpgov gate``) and by the gateway for its upstream servers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NAME_SEPARATOR = "__"


@dataclass(frozen=True)
class UpstreamConfig:
    """One configured MCP server: its slug (the config's name) and how to reach it."""

    slug: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    path: str | None = None  # seed yaml: the path a filesystem server is scoped to
    permissions: str | None = None  # seed yaml: read_only | read_write
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def transport(self) -> str:
        return "http" if self.url else "stdio"

    def targets(self) -> list[str]:
        """Where this server points: url, path and arguments (checked against patterns and production words).

        The command itself is not a target: an interpreter's install path says nothing about the data.
        """
        return [t for t in (self.url, self.path, *self.args) if t]


class ConfigError(Exception):
    """The MCP configuration file cannot be read."""


def parse_mcp_config(
    doc: Any, *, environment: str | None = None
) -> tuple[dict[str, UpstreamConfig], tuple[str, ...]]:
    """``(servers, extra forbidden patterns)`` from a parsed ``.mcp.json`` or seed ``mcp-config.yaml``."""
    if not isinstance(doc, dict):
        raise ConfigError("the MCP configuration must be a mapping")
    servers: dict[str, UpstreamConfig] = {}
    if "mcpServers" in doc:
        entries = doc["mcpServers"] or {}
        if not isinstance(entries, dict):
            raise ConfigError("mcpServers must be a mapping of name to server")
        for name, entry in entries.items():
            if not isinstance(entry, dict):
                raise ConfigError(f"mcpServers.{name} must be a mapping")
            url = entry.get("url") or entry.get("serverUrl")
            command = entry.get("command")
            if not url and not command:
                raise ConfigError(f"mcpServers.{name} needs a command or a url")
            servers[str(name)] = UpstreamConfig(
                slug=str(name),
                command=command,
                args=tuple(str(a) for a in entry.get("args") or ()),
                env={str(k): str(v) for k, v in (entry.get("env") or {}).items()},
                url=url,
                headers={str(k): str(v) for k, v in (entry.get("headers") or {}).items()},
            )
        return servers, ()
    if "environments" in doc:
        envs = doc["environments"] or {}
        if environment is None or environment not in envs:
            raise ConfigError(
                f"the configuration has no environment {environment!r} (has: {', '.join(envs)})"
            )
        env = envs[environment] or {}
        for item in env.get("allowed_servers") or ():
            if not isinstance(item, dict) or "name" not in item:
                raise ConfigError("each allowed_servers entry needs a name")
            name = str(item["name"])
            servers[name] = UpstreamConfig(
                slug=name,
                url=item.get("url"),
                path=item.get("path"),
                permissions=item.get("permissions"),
                command=item.get("command"),
                args=tuple(str(a) for a in item.get("args") or ()),
            )
        return servers, tuple(str(p) for p in env.get("forbidden_patterns") or ())
    raise ConfigError('the configuration has neither "mcpServers" nor "environments"')


def load_mcp_config(
    path: str | os.PathLike[str], *, environment: str | None = None
) -> tuple[dict[str, UpstreamConfig], tuple[str, ...]]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc}") from exc
    try:
        doc = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {exc}") from exc
    return parse_mcp_config(doc, environment=environment)
