"""What a policy file says, once read: its blocks as typed specs, each with where it was written.

Also the vocabulary of the seed's shape, and the error that names the lines of a bad file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import ValidationError

from governance.choices import RuleKind

BLOCKS = ("mcp_access", "environments", "rate_limits")
DEFAULT_DENY = "deny"
ACCESS_AUTHORIZATION = "explicit_human_authorization_required"
ROLE_KEYS = ("allowed_servers", "forbidden_servers")
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
