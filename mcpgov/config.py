""".mcp.json-style MCP configurations: ``{"mcpServers": {...}}`` files and the seed's ``mcp-config.yaml``.

The seed's shape is ``environments: {env: {allowed_servers, forbidden_patterns}}``. Read by the environment
gate (``mcpgov gate``) and by the gateway for its upstream servers. Every problem is a :class:`ConfigError`
whose message is one line naming the file, the line and the key (``.mcp.json:4: mcpServers.time.args: …``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import yaml

NAME_SEPARATOR = "__"

# commands that run a program given as their first argument (a script, a module, a package)
INTERPRETERS = re.compile(
    r"^(python[0-9.]*|pypy[0-9.]*|node|nodejs|deno|bun|ruby|perl|php|java|sh|bash|zsh)$"
)
LAUNCHERS = re.compile(r"^(npx|bunx|uvx|pipx|uv|pnpm|yarn|npm|docker|podman)$")
# a launcher's sub-commands that come before the program (``uv run``, ``pnpm dlx``, ``docker run``)
LAUNCHER_SUBCOMMANDS = {"run", "dlx", "exec", "x", "tool"}
# options whose value names the program or where it lives, never what it reaches
PROGRAM_OPTIONS = {
    "-m",
    "-r",
    "--require",
    "--import",
    "--loader",
    "--from",
    "--with",
    "--package",
    "-p",
    "--directory",
    "--project",
    "--prefix",
    "-jar",
    "--python",
}
PROGRAM_IS_OPTION = {"-m", "-jar"}
SCRIPT_SUFFIXES = {
    ".py",
    ".pyz",
    ".pyc",
    ".js",
    ".mjs",
    ".cjs",
    ".ts",
    ".mts",
    ".jar",
    ".sh",
    ".rb",
    ".pl",
    ".php",
}
PROGRAM_DIRS = {"node_modules", "site-packages", "dist-packages", ".venv", "venv", "bin"}


def _looks_like_program(arg: str) -> bool:
    """A script or an installed program's file (``…/node_modules/…/index.js``, ``server.py``)."""
    if "://" in arg:
        return False
    p = PurePath(arg)
    return p.suffix.lower() in SCRIPT_SUFFIXES or any(part in PROGRAM_DIRS for part in p.parts[:-1])


def server_targets(
    command: str | None, args: tuple[str, ...], env: dict[str, str], url: str | None, path: str | None
) -> list[str]:
    """What a server reaches: its URL, the seed's path, the paths and connection strings it is given.

    Not targets: the command, the program it runs (the script or module an interpreter or launcher
    starts, files under ``node_modules`` / ``site-packages``), option names. Environment values count
    when they are URLs or connection strings (``DATABASE_URL=postgres://db.prod…``).
    """
    out = [t for t in (url, path) if t]
    prog = PurePath(command).name if command else ""
    expect_program = bool(INTERPRETERS.match(prog) or LAUNCHERS.match(prog))
    launcher = bool(LAUNCHERS.match(prog))
    skip_next = False
    for arg in args:
        if skip_next:  # the value of an option that names the program
            skip_next = False
            continue
        if arg.startswith("-"):
            name, eq, value = arg.partition("=")
            if name in PROGRAM_OPTIONS:
                if not eq:
                    skip_next = True
                if name in PROGRAM_IS_OPTION:  # ``python -m module``: no program positional follows
                    expect_program = False
                continue
            if eq and value and not _looks_like_program(value):
                out.append(value)
            continue
        if launcher and expect_program and arg in LAUNCHER_SUBCOMMANDS:
            continue
        if expect_program:  # the first positional of an interpreter or launcher is the program
            expect_program = False
            continue
        if _looks_like_program(arg):
            continue
        out.append(arg)
    out += [v for v in env.values() if "://" in v]
    return out


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
        """Where this server points (checked against forbidden patterns and production words).

        See :func:`server_targets`: the program's own location says nothing about the data it reaches.
        """
        return server_targets(self.command, self.args, self.env, self.url, self.path)


class ConfigError(Exception):
    """The MCP configuration file cannot be used; the message is one line naming the file, line and key."""


class _Where:
    """Names a key of the file being parsed: ``file:line: key``."""

    def __init__(self, source: str | None, text: str | None) -> None:
        self.source = source
        self.lines = text.splitlines() if text else []

    def line_of(self, key: str) -> int | None:
        last = key.rsplit(".", 1)[-1]
        for pattern in (f'"{last}"', f"'{last}'", f"{last}:", last):
            for i, line in enumerate(self.lines, 1):
                if pattern in line:
                    return i
        return None

    def error(self, key: str | None, problem: str, line: int | None = None) -> ConfigError:
        line = line if line is not None else (self.line_of(key) if key else None)
        where = self.source or "the MCP configuration"
        if line is not None and self.source:
            where += f":{line}"
        return ConfigError(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


def _str_list(where: _Where, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(a, str | int | float) for a in value):
        raise where.error(key, f"must be a list of strings, not {_kind(value)}")
    return tuple(str(a) for a in value)


def _str_map(where: _Where, key: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(v, str | int | float | bool) for v in value.values()
    ):
        raise where.error(key, f"must be a mapping of names to strings, not {_kind(value)}")
    return {str(k): str(v) for k, v in value.items()}


def _opt_str(where: _Where, key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise where.error(key, f"must be a string, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def parse_mcp_config(
    doc: Any, *, environment: str | None = None, source: str | None = None, text: str | None = None
) -> tuple[dict[str, UpstreamConfig], tuple[str, ...]]:
    """``(servers, extra forbidden patterns)`` from a parsed ``.mcp.json`` or seed ``mcp-config.yaml``."""
    where = _Where(source, text)
    if not isinstance(doc, dict):
        raise where.error(
            None, f'must be a mapping with "mcpServers" (or the seed\'s "environments"), not {_kind(doc)}', 1
        )
    servers: dict[str, UpstreamConfig] = {}
    if "mcpServers" in doc:
        entries = doc["mcpServers"] or {}
        if not isinstance(entries, dict):
            raise where.error(
                "mcpServers", f"must be a mapping of server name to server, not {_kind(entries)}"
            )
        for name, entry in entries.items():
            key = f"mcpServers.{name}"
            if not isinstance(entry, dict):
                raise where.error(key, f"must be a mapping, not {_kind(entry)}")
            url = _opt_str(where, f"{key}.url", entry.get("url") or entry.get("serverUrl"))
            command = _opt_str(where, f"{key}.command", entry.get("command"))
            if not url and not command:
                raise where.error(key, 'needs a "command" (stdio) or a "url" (HTTP)')
            servers[str(name)] = UpstreamConfig(
                slug=str(name),
                command=command,
                args=_str_list(where, f"{key}.args", entry.get("args")),
                env=_str_map(where, f"{key}.env", entry.get("env")),
                url=url,
                headers=_str_map(where, f"{key}.headers", entry.get("headers")),
            )
        return servers, ()
    if "environments" in doc:
        envs = doc["environments"] or {}
        if not isinstance(envs, dict):
            raise where.error("environments", f"must be a mapping, not {_kind(envs)}")
        if environment is None or environment not in envs:
            raise where.error(
                "environments", f"has no environment {environment!r} (has: {', '.join(map(str, envs))})"
            )
        env = envs[environment] or {}
        if not isinstance(env, dict):
            raise where.error(f"environments.{environment}", f"must be a mapping, not {_kind(env)}")
        items = env.get("allowed_servers") or ()
        if not isinstance(items, list):
            raise where.error(
                f"environments.{environment}.allowed_servers", f"must be a list, not {_kind(items)}"
            )
        for i, item in enumerate(items):
            key = f"environments.{environment}.allowed_servers[{i}]"
            if not isinstance(item, dict) or "name" not in item:
                raise where.error(key, "needs a name", where.line_of("allowed_servers"))
            name = str(item["name"])
            servers[name] = UpstreamConfig(
                slug=name,
                url=_opt_str(where, f"{key}.url", item.get("url")),
                path=_opt_str(where, f"{key}.path", item.get("path")),
                permissions=_opt_str(where, f"{key}.permissions", item.get("permissions")),
                command=_opt_str(where, f"{key}.command", item.get("command")),
                args=_str_list(where, f"{key}.args", item.get("args")),
            )
        patterns = _str_list(
            where, f"environments.{environment}.forbidden_patterns", env.get("forbidden_patterns")
        )
        return servers, patterns
    raise where.error(None, 'has neither "mcpServers" nor "environments"', 1)


def load_mcp_config(
    path: str | os.PathLike[str], *, environment: str | None = None
) -> tuple[dict[str, UpstreamConfig], tuple[str, ...]]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read it ({exc})") from exc
    if not text.strip():
        raise ConfigError(f"{p}:1: the file is empty")
    if p.suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from exc
    else:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{p}{line}: not valid YAML ({problem})") from exc
    return parse_mcp_config(doc, environment=environment, source=str(p), text=text)


def check_known_servers(
    upstreams: dict[str, UpstreamConfig], catalogue: Any, *, source: str | None, version: int
) -> None:
    """Every configured name must be a server slug of the bundle's catalogue (a typo is a config error)."""
    unknown = sorted(set(upstreams) - set(catalogue))
    if unknown:
        where = _Where(source, Path(source).read_text(encoding="utf-8") if source else None)
        key = f"mcpServers.{unknown[0]}" if "mcpServers" in "\n".join(where.lines) else unknown[0]
        raise where.error(
            key,
            f"unknown server slug {unknown[0]!r}: not in the catalogue of bundle v{version} "
            f"(has: {', '.join(sorted(catalogue))})",
        )
