"""The policy bundle schema (``mcpgov.bundle/1``), shared by the portal (which builds it) and the gateway.

Pure pydantic v2 + stdlib on purpose: the portal imports this module to build bundles, the enforcer to
read them. The wire format and every field are documented in ``docs/bundle.md``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    model_serializer,
    model_validator,
)

SCHEMA_ID = "mcpgov.bundle/1"
FLAGS_SCHEMA_ID = "mcpgov.flags/1"
DEFAULT_PRODUCTION_URL_WORDS = ("prod", "production", "live", "main")
DEFAULT_LARGE_DATA_BYTES = 1_048_576
DEFAULT_CASCADE_WRITE_THRESHOLD = 3

# Flag constraint contexts. The gateway evaluates the agent role only; a stored constraint on
# another Unleash context is decided by the portal when it compiles the bundle (that context
# is known then, or absent: `IN` fails, `NOT_IN` passes), so it never reaches the gateway.
FlagContextName = Literal["role"]
FLAG_CONTEXT_NAMES: tuple[str, ...] = FlagContextName.__args__
PORTAL_CONTEXT_NAMES: tuple[str, ...] = ("userId", "environment", "appName")


class Trigger(StrEnum):
    """Why a call was refused or a session stopped: the audit event's ``trigger`` (``docs/enforcer-api.md``).

    The first six are the seed's kill-switch triggers. The portal builds its choices from this enum.
    """

    UNAUTHORIZED_SERVER = "unauthorized_server"
    WRITE_IN_READ_SESSION = "write_in_read_session"
    PRODUCTION_ENVIRONMENT = "production_environment"
    RATE_LIMIT = "rate_limit"
    LARGE_DATA_RETURN = "large_data_return"
    CASCADE_WRITE_CHAIN = "cascade_write_chain"
    KILL_SWITCH_FLAG = "kill_switch_flag"
    BUNDLE_EXPIRED = "bundle_expired"
    APPROVAL_REQUIRED = "approval_required"
    TOOL_DEFINITION_CHANGED = "tool_definition_changed"
    SESSION_HALTED = "session_halted"
    # A tool the upstream lists that the bundle's server entry does not know (added at run time or never
    # approved): hidden from tools/list and refused, unless the server's allow_unknown_tools is "as_write".
    UNKNOWN_TOOL = "unknown_tool"
    # A request an upstream server made of the agent's side (sampling, elicitation, roots) that the
    # server's server_requests policy refuses; the agent session goes on (the server asked, not the agent).
    SERVER_REQUEST_DENIED = "server_request_denied"


def canonical_json(obj: Any) -> bytes:
    """The one canonical JSON encoding used for signing, hashing and content hashes.

    Keys sorted, no whitespace (separators ``,`` and ``:``), non-ASCII kept as UTF-8
    (``ensure_ascii=False``), NaN/Infinity rejected.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def tool_definition_hash(name: str, description: str | None, input_schema: dict[str, Any] | None) -> str:
    """sha256 hex of the canonical JSON of ``{"name", "description", "input_schema"}``.

    A missing description is the empty string and a missing schema the empty object, so the
    portal (discovering tools) and the gateway (listing them live) hash the same thing.
    """
    doc = {"name": name, "description": description or "", "input_schema": input_schema or {}}
    return hashlib.sha256(canonical_json(doc)).hexdigest()


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _format_utc(value: datetime) -> str:
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


# RFC 3339 UTC with a trailing "Z"; naive datetimes are rejected.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc), PlainSerializer(_format_utc, return_type=str)]
Slug = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
PositiveInt = Annotated[int, Field(ge=0)]


class _Frozen(BaseModel):
    # extra="forbid": a misspelt policy key must fail verification, not be silently ignored.
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class RolePolicy(_Frozen):
    allowed_servers: tuple[Slug, ...] = ()
    forbidden_servers: tuple[Slug, ...] = ()


class ToolPolicy(_Frozen):
    tool_class: Literal["read", "write"] = Field("write", alias="class")
    approval_required: bool = False
    # null: the definition is not pinned (the portal never saw it); otherwise a changed definition hides the tool.
    definition_hash: Sha256Hex | None = None


class ServerRequestPolicy(_Frozen):
    """What an upstream server may ask of the agent's side: MCP server-to-client requests.

    Sampling (the agent's own model answering the server) is off unless allowed; ``maxTokens`` above the
    cap is lowered to it; tools inside a sampling request need ``sampling_tools``. Form-mode elicitation
    and roots are allowed unless turned off; URL-mode elicitation only to the listed domains (a domain
    also covers its subdomains), over https.
    """

    sampling: bool = False
    sampling_max_tokens: PositiveInt | None = None
    sampling_tools: bool = False
    elicitation: bool = True
    elicitation_url_domains: tuple[str, ...] = ()
    roots: bool = True


_DEFAULT_SERVER_REQUESTS = ServerRequestPolicy()


class ServerSpec(_Frozen):
    category: Literal[
        "filesystem", "shell_execution", "database", "api", "cloud_infrastructure", "web", "other"
    ] = "other"
    transport: Literal["stdio", "http"]
    command: str | None = None
    args: tuple[str, ...] = ()
    url: str | None = None
    tools: dict[str, ToolPolicy] = Field(default_factory=dict)
    cost_per_call: float = 0.0
    # The tools map is the approved set. "deny": any other tool is hidden and refused (trigger unknown_tool);
    # "as_write": other tools pass, classed write (so read-only sessions still refuse them).
    allow_unknown_tools: Literal["deny", "as_write"] = "deny"
    # absent from the bundle when it is the default (so gateways that predate it accept the bundle)
    server_requests: ServerRequestPolicy = Field(default_factory=ServerRequestPolicy)

    @model_serializer(mode="wrap")
    def _omit_default_server_requests(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if self.server_requests == _DEFAULT_SERVER_REQUESTS:
            data.pop("server_requests", None)
        return data

    @model_validator(mode="after")
    def _transport_fields(self) -> ServerSpec:
        # Both may be empty: a catalogue entry the portal knows only by name (e.g. imported from
        # the seed's YAML). The gateway then needs the server in its local mcpServers config.
        if self.transport == "stdio" and self.url:
            raise ValueError("a stdio server has a command, not a url")
        if self.transport == "http" and self.command:
            raise ValueError("an http server has a url, not a command")
        return self


class Binding(_Frozen):
    target: str
    permission: Literal["read_only", "read_write"] = "read_only"


class EnvironmentPolicy(_Frozen):
    name: Slug
    requires_authorization: bool = False
    forbidden_patterns: tuple[str, ...] = ()
    # empty: use the team-wide triggers.production_url_words
    production_url_words: tuple[str, ...] = ()
    bindings: dict[str, Binding] = Field(default_factory=dict)


class GlobalLimits(_Frozen):
    max_calls_per_session: PositiveInt | None = None
    max_calls_per_minute: PositiveInt | None = None
    pause_at_percent: Annotated[int, Field(ge=1, le=100)] | None = None


class ServerLimits(_Frozen):
    max_calls_per_session: PositiveInt | None = None
    max_calls_per_minute: PositiveInt | None = None
    max_read_calls_per_session: PositiveInt | None = None
    max_write_calls_per_session: PositiveInt | None = None
    max_rows_returned: PositiveInt | None = None
    max_execution_time_seconds: PositiveInt | None = None
    max_response_bytes: PositiveInt | None = None


class RateLimits(_Frozen):
    global_limits: GlobalLimits = Field(default_factory=GlobalLimits, alias="global")
    per_server: dict[str, ServerLimits] = Field(default_factory=dict)


class Triggers(_Frozen):
    cascade_write_threshold: Annotated[int, Field(ge=2)] = DEFAULT_CASCADE_WRITE_THRESHOLD
    large_data_bytes: Annotated[int, Field(ge=1)] = DEFAULT_LARGE_DATA_BYTES
    production_url_words: tuple[str, ...] = DEFAULT_PRODUCTION_URL_WORDS


def constraint_matches(operator: str, values, value: str | None) -> bool:
    """Unleash semantics of one constraint: `IN` passes when the context value is one of
    `values`, `NOT_IN` when it is not; a context without the value fails `IN`, passes `NOT_IN`."""
    return (operator == "IN") == (value is not None and value in values)


def constraints_resolve(
    constraints: list[dict[str, Any]], context: dict[str, str]
) -> tuple[bool, list[dict[str, Any]]]:
    """Decide what `context` (the portal's, at compile time) can decide; keep the role constraints.

    Returns (every decided constraint passes, the role constraints left for the gateway).
    """
    remaining = []
    for c in constraints or []:
        name, operator, values = c.get("context_name"), c.get("operator"), list(c.get("values") or [])
        if name in FLAG_CONTEXT_NAMES:
            remaining.append({"context_name": name, "operator": operator, "values": sorted(values)})
        elif not constraint_matches(operator, values, context.get(name)):
            return False, remaining
    return True, remaining


class FlagConstraint(_Frozen):
    context_name: FlagContextName = "role"
    operator: Literal["IN", "NOT_IN"]
    values: tuple[str, ...] = ()


class Flag(_Frozen):
    name: str = Field(min_length=1)
    # null: the flag covers every server
    server: Slug | None = None
    capability: Literal["read", "write", "all"] = "all"
    enabled: bool
    reason: str = ""
    changed_at: UtcDatetime | None = None
    constraints: tuple[FlagConstraint, ...] = ()

    def is_on_for(self, role: str) -> bool:
        """Unleash semantics: on when enabled and every constraint matches the context."""
        if not self.enabled:
            return False
        return all(constraint_matches(c.operator, c.values, role) for c in self.constraints)


class Grant(_Frozen):
    id: str = Field(min_length=1)
    role: Slug
    servers: tuple[Slug, ...]
    starts_at: UtcDatetime
    ends_at: UtcDatetime

    @model_validator(mode="after")
    def _window(self) -> Grant:
        if self.ends_at <= self.starts_at:
            raise ValueError("a grant must end after it starts")
        return self


class AgentSpec(_Frozen):
    """A registered agent of the team (``docs/enforcer-api.md``, "Agent identity").

    The gateway refuses a bearer token whose ``sub`` (``agent:<id>``) is missing here or revoked, or whose
    ``jti`` is listed in ``revoked_jti``; a static API key is accepted when its sha256 is listed.
    """

    id: str = Field(min_length=1, max_length=64)
    slug: Slug
    roles: tuple[Slug, ...] = ()
    environments: tuple[Slug, ...] = ()
    revoked: bool = False
    api_key_sha256: tuple[Sha256Hex, ...] = ()
    revoked_jti: tuple[str, ...] = ()


class Bundle(_Frozen):
    bundle_schema: Literal["mcpgov.bundle/1"] = Field(SCHEMA_ID, alias="schema")
    team: Slug
    environment: Slug
    version: Annotated[int, Field(ge=1)]
    issued_at: UtcDatetime
    expires_at: UtcDatetime
    roles: dict[str, RolePolicy] = Field(default_factory=dict)
    servers: dict[str, ServerSpec] = Field(default_factory=dict)
    environment_policy: EnvironmentPolicy
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    triggers: Triggers = Field(default_factory=Triggers)
    flags: tuple[Flag, ...] = ()
    grants: tuple[Grant, ...] = ()
    agents: tuple[AgentSpec, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Bundle:
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        if self.environment_policy.name != self.environment:
            raise ValueError("environment_policy.name must equal environment")
        return self

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def canonical_bytes(self) -> bytes:
        """The payload the portal signs: canonical JSON of every field, defaults included."""
        return canonical_json(self.to_json_dict())

    def content_hash(self) -> str:
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    @classmethod
    def from_json_bytes(cls, data: bytes | str) -> Bundle:
        return cls.model_validate_json(data)

    def agent(self, agent_id: str) -> AgentSpec | None:
        """The agent with this id (the token's ``sub`` without ``agent:``), or None."""
        for spec in self.agents:
            if spec.id == agent_id:
                return spec
        return None

    @property
    def production_url_words(self) -> tuple[str, ...]:
        return self.environment_policy.production_url_words or self.triggers.production_url_words


class FlagsUpdate(_Frozen):
    """A signed flags update (``mcpgov.flags/1``): every flag of one team+environment, as the bundle
    would carry them, delivered on a toggle without a new bundle (``docs/flags.md``).

    ``bundle_version`` is the latest bundle when the portal issued it: the update applies to a gateway
    running that version or an older one; a bundle with a higher version was built after it and
    carries these flags (or newer) itself. ``revision`` increases by one per update of the
    environment, so an older or replayed update is refused. It never outlives its bundle
    (``expires_at`` is that bundle's).
    """

    flags_schema: Literal["mcpgov.flags/1"] = Field(FLAGS_SCHEMA_ID, alias="schema")
    team: Slug
    environment: Slug
    bundle_version: Annotated[int, Field(ge=1)]
    revision: Annotated[int, Field(ge=1)]
    issued_at: UtcDatetime
    expires_at: UtcDatetime
    flags: tuple[Flag, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> FlagsUpdate:
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        return self

    def canonical_bytes(self) -> bytes:
        """The payload the portal signs: canonical JSON of every field, defaults included."""
        return canonical_json(self.model_dump(mode="json", by_alias=True))

    @classmethod
    def from_json_bytes(cls, data: bytes | str) -> FlagsUpdate:
        return cls.model_validate_json(data)
