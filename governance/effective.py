"""The effective policy of a role in an environment, read from a signed bundle as gateways enforce it.

`bundle_enforced` verifies the stored JWS against the team's keys and parses its payload with the
shared schema (`mcpgov.bundle.Bundle`): what a gateway receives, not the database rows it came from.
`effective_policy` then asks the gateway's own decision engine (`mcpgov.decision.decide`) about every
tool of every server the role could name, as the first call of a fresh read-only and of a fresh
read-write session, so each verdict on the page is the one a gateway returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from mcpgov.bundle import Bundle, Flag, Grant, ServerLimits
from mcpgov.decision import Policy, ToolCall, Verdict, decide
from mcpgov.session import SessionState
from mcpgov.verify import BundleVerificationError, verify_jws

# The tool name used to ask about "any tool the bundle does not list" (never a real tool: it has a space).
UNLISTED_TOOL = "any other tool"
LIMIT_LABELS = {
    "max_calls_per_session": "calls per session",
    "max_calls_per_minute": "calls per minute",
    "max_read_calls_per_session": "read calls per session",
    "max_write_calls_per_session": "write calls per session",
    "max_rows_returned": "rows returned",
    "max_execution_time_seconds": "execution seconds",
    "max_response_bytes": "response bytes",
}


class BundleNotVerified(Exception):
    """The stored bundle's signature does not verify against the team's keys (the row was altered)."""


def bundle_enforced(policy_bundle) -> Bundle:
    """The stored PolicyBundle as a gateway reads it: the JWS verified with the team's keys (retired
    ones included, for old versions), its payload parsed by the shared schema."""
    from governance.models import SigningKey
    from governance.services.signing import public_key_of

    keys = {k.kid: public_key_of(k) for k in SigningKey.objects.filter(team_id=policy_bundle.team_id)}
    try:
        _kid, payload = verify_jws(policy_bundle.jws, keys)
        return Bundle.from_json_bytes(payload)
    except (BundleVerificationError, ValueError) as exc:
        raise BundleNotVerified(str(exc)) from exc


@dataclass(frozen=True)
class Outcome:
    kind: str  # "allowed" | "approval" | "refused"
    trigger: str = ""
    reason: str = ""

    @property
    def label(self) -> str:
        return {"allowed": "Allowed", "approval": "Each call needs approval", "refused": "Refused"}[self.kind]


@dataclass(frozen=True)
class EffectiveTool:
    name: str
    tool_class: str  # "read" | "write"
    approval_required: bool
    pinned: bool
    listed: bool  # False: the row for tools the bundle does not list
    read_only: Outcome
    read_write: Outcome

    @property
    def usable(self) -> bool:
        return self.read_only.kind != "refused" or self.read_write.kind != "refused"


@dataclass(frozen=True)
class EffectiveServer:
    slug: str
    category: str
    transport: str
    binding_target: str | None
    permission: str  # read_only | read_write | "" (not bound)
    production_reason: str
    grants: tuple[tuple[Grant, bool], ...]  # (grant, live at the evaluation time)
    flag_off_read: Flag | None
    flag_off_write: Flag | None
    limits: tuple[tuple[str, int], ...]
    cost_per_call: float
    unknown_tools: str
    tools: tuple[EffectiveTool, ...]

    @property
    def usable(self) -> bool:
        return any(t.usable for t in self.tools)

    @property
    def refusal(self) -> Outcome:
        """Why nothing on this server is allowed: a read-write session's verdict on its first read tool
        (a write-only kill switch would hide the allowlist's answer), else on its first tool."""
        reads = [t for t in self.tools if t.listed and t.tool_class == "read"]
        return (reads or list(self.tools))[0].read_write


@dataclass
class EffectivePolicy:
    bundle: Bundle
    role: str
    evaluated_at: datetime
    defined: bool
    allowed_servers: tuple[str, ...]
    forbidden_servers: tuple[str, ...]
    servers: list[EffectiveServer] = field(default_factory=list)  # at least one tool allowed
    refused: list[EffectiveServer] = field(default_factory=list)
    flags_off: list[Flag] = field(default_factory=list)
    grants: list[tuple[Grant, bool]] = field(default_factory=list)

    @property
    def expired(self) -> bool:
        return self.evaluated_at >= self.bundle.expires_at

    @property
    def global_limits(self) -> tuple[tuple[str, int], ...]:
        g = self.bundle.rate_limits.global_limits
        items = (
            ("calls per session", g.max_calls_per_session),
            ("calls per minute", g.max_calls_per_minute),
            ("pause at percent", g.pause_at_percent),
        )
        return tuple((k, v) for k, v in items if v is not None)


def _verdict(
    bundle: Bundle, policy: Policy, role: str, server: str, tool: str, *, read_only: bool, now: float
):
    decision = decide(
        policy,
        SessionState(session_id="effective-policy", role=role, read_only=read_only),
        ToolCall(server=server, tool=tool),
        now,
    )
    if decision.verdict == Verdict.ALLOW:
        return Outcome("allowed")
    kind = "approval" if decision.verdict == Verdict.APPROVAL else "refused"
    return Outcome(kind, str(decision.trigger or ""), decision.reason)


def _limits(limits: ServerLimits | None) -> tuple[tuple[str, int], ...]:
    if limits is None:
        return ()
    return tuple((LIMIT_LABELS[k], v) for k, v in limits.model_dump().items() if v is not None)


def effective_policy(bundle: Bundle, role: str, *, at: datetime | None = None) -> EffectivePolicy:
    """What `role` may do under `bundle`, decided by the gateway's engine at `at` (default: now,
    or the bundle's issue time when it has expired, to show what it enforced while in force)."""
    at = (at or datetime.now(UTC)).astimezone(UTC)
    if at >= bundle.expires_at:
        at = bundle.issued_at
    now = at.timestamp()
    policy = Policy(bundle, role)
    role_policy = bundle.roles.get(role)
    out = EffectivePolicy(
        bundle=bundle,
        role=role,
        evaluated_at=at,
        defined=role_policy is not None,
        allowed_servers=role_policy.allowed_servers if role_policy else (),
        forbidden_servers=role_policy.forbidden_servers if role_policy else (),
        flags_off=[f for f in bundle.flags if not f.is_on_for(role)],
        grants=[(g, g.starts_at <= at < g.ends_at) for g in bundle.grants if g.role == role],
    )
    for slug in sorted(policy.rules):
        rule = policy.rules[slug]
        spec = bundle.servers.get(slug)
        binding = bundle.environment_policy.bindings.get(slug)
        tools = []
        names = sorted(spec.tools) if spec else []
        for name in [*names, UNLISTED_TOOL]:
            tp = spec.tools.get(name) if spec else None
            tools.append(
                EffectiveTool(
                    name=name,
                    tool_class=tp.tool_class if tp else "write",
                    approval_required=bool(tp and tp.approval_required),
                    pinned=bool(tp and tp.definition_hash),
                    listed=tp is not None,
                    read_only=_verdict(bundle, policy, role, slug, name, read_only=True, now=now),
                    read_write=_verdict(bundle, policy, role, slug, name, read_only=False, now=now),
                )
            )
        server = EffectiveServer(
            slug=slug,
            category=spec.category if spec else "",
            transport=spec.transport if spec else "",
            binding_target=rule.binding_target,
            permission=binding.permission if binding else "",
            production_reason=rule.production_reason,
            grants=tuple(
                (g, g.starts_at <= at < g.ends_at)
                for g in bundle.grants
                if g.role == role and slug in g.servers
            ),
            flag_off_read=rule.flag_off_read,
            flag_off_write=rule.flag_off_write,
            limits=_limits(rule.limits),
            cost_per_call=spec.cost_per_call if spec else 0.0,
            unknown_tools=spec.allow_unknown_tools if spec else "deny",
            tools=tuple(tools),
        )
        (out.servers if server.usable else out.refused).append(server)
    return out
