"""The decision engine: a pure function ``decide(bundle, session_state, call, now) -> Decision``.

It follows the call path of DESIGN.md in order (see ``docs/gateway.md``). Lookups that depend only
on the bundle and the role are compiled once per bundle (:func:`compile_policy`), so a decision is a
handful of dict lookups and comparisons. The engine never changes the session state; its caller does.
"""

from __future__ import annotations

import copy
import math
import re
import time
import weakref
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from mcpgov.bundle import Bundle, Flag, ServerLimits, ServerRequestPolicy, Trigger
from mcpgov.redact import summarize_arguments
from mcpgov.session import MINUTE, CallRecord, SessionState, SessionStatus, call_resource


class Verdict(StrEnum):
    ALLOW = "allow"
    REFUSE = "refuse"
    APPROVAL = "approval"  # the call waits for a person's approval


TRIGGER_TITLES = {
    Trigger.UNAUTHORIZED_SERVER: "trigger 1 — UNAUTHORIZED SERVER",
    Trigger.WRITE_IN_READ_SESSION: "trigger 2 — WRITE OPERATION IN READ SESSION",
    Trigger.PRODUCTION_ENVIRONMENT: "trigger 3 — PRODUCTION ENVIRONMENT DETECTED",
    Trigger.RATE_LIMIT: "trigger 4 — RATE LIMIT HIT",
    Trigger.LARGE_DATA_RETURN: "trigger 5 — LARGE DATA RETURN",
    Trigger.CASCADE_WRITE_CHAIN: "trigger 6 — CASCADE WRITE CHAIN",
    Trigger.KILL_SWITCH_FLAG: "governance flag kill switch",
    Trigger.BUNDLE_EXPIRED: "no valid policy bundle",
    Trigger.APPROVAL_REQUIRED: "approval required",
    Trigger.TOOL_DEFINITION_CHANGED: "tool definition changed",
    Trigger.SESSION_HALTED: "session halted",
}

CONTINUE_HINT = (
    "No MCP call will run until a person allows this session to continue "
    "(portal: Sessions → this session → Allow to continue)."
)


@dataclass(slots=True, repr=False)
class Decision:
    """The verdict for one call. ``new_state`` is the session state the caller must move to, if any."""

    verdict: Verdict
    trigger: Trigger | None = None
    message: str = ""  # what the agent reads
    new_state: SessionStatus | None = None
    timeout: float | None = None
    pause_key: str | None = None
    reason: str = ""  # one line, for the session state and the portal; the message's first line by default

    def __post_init__(self) -> None:
        if not self.reason and self.message:
            self.reason = self.message.splitlines()[0]

    @property
    def allowed(self) -> bool:
        return self.verdict == Verdict.ALLOW

    def __repr__(self) -> str:
        return f"Decision({self.verdict!r}, trigger={self.trigger!r}, new_state={self.new_state!r})"


@dataclass(slots=True)
class ToolCall:
    """What the agent asked for. ``definition_changed`` is set by the gateway from tool pinning."""

    server: str
    tool: str
    arguments: dict[str, Any] | None = None
    definition_changed: bool = False
    # None: a tools/call. Otherwise the read method of the wider MCP surface (``resources/read``,
    # ``prompts/get``) that is governed as a read call on its server: no tool pinning, never a write.
    method: str | None = None
    uri: str | None = None  # resources/read: the upstream URI, checked against forbidden patterns


@dataclass(slots=True)
class ToolRule:
    name: str
    is_write: bool
    approval_required: bool
    definition_hash: str | None
    timeout: float | None
    allow: Decision = field(init=False)  # shared: allowing a call allocates nothing

    def __post_init__(self) -> None:
        self.allow = Decision(Verdict.ALLOW, timeout=self.timeout)


@dataclass(slots=True)
class ServerRule:
    """Everything about one server for one role in this bundle, precomputed by :func:`_compile_server`."""

    slug: str
    role_violation: str | None
    env_violation: str | None
    binding_target: str | None
    binding_read_only: bool
    production: bool
    production_reason: str
    grant_windows: tuple[tuple[float, float], ...]
    flag_off_read: Flag | None
    flag_off_write: Flag | None
    limits: ServerLimits | None
    has_limits: bool
    timeout: float | None
    tools: dict[str, ToolRule]
    unknown_tool: ToolRule
    read_rule: ToolRule  # resources/read and prompts/get on this server: a read, never approval-bound
    server_requests: ServerRequestPolicy  # what the server may ask of the agent's side
    # the bundle's tools map is the approved set: any other tool is refused (allow_unknown_tools "deny")
    unknown_denied: bool = True

    def tool(self, name: str) -> ToolRule:
        return self.tools.get(name) or self.unknown_tool


class Policy:
    """A bundle compiled for one role."""

    __slots__ = (
        "_bundle_ref",
        "cascade_threshold",
        "environment",
        "expires_at",
        "forbidden_patterns",
        "global_limits",
        "has_global_limits",
        "large_data_bytes",
        "pause_percent",
        "role",
        "rules",
        "version",
    )

    def __init__(self, bundle: Bundle, role: str) -> None:
        # weak: the policy cache must not keep old bundles alive; whoever holds a Policy holds its bundle too
        self._bundle_ref = weakref.ref(bundle)
        self.role = role
        self.environment = bundle.environment
        self.forbidden_patterns = bundle.environment_policy.forbidden_patterns
        self.version = bundle.version
        self.expires_at = bundle.expires_at.timestamp()
        gl = bundle.rate_limits.global_limits
        self.global_limits = gl
        self.has_global_limits = gl.max_calls_per_session is not None or gl.max_calls_per_minute is not None
        self.pause_percent = gl.pause_at_percent
        self.cascade_threshold = bundle.triggers.cascade_write_threshold
        self.large_data_bytes = bundle.triggers.large_data_bytes
        self.rules: dict[str, ServerRule] = {}
        known = set(bundle.servers) | set(bundle.environment_policy.bindings)
        role_policy = bundle.roles.get(role)
        if role_policy:
            known |= set(role_policy.allowed_servers) | set(role_policy.forbidden_servers)
        for slug in known:
            self.rules[slug] = _compile_server(bundle, role, slug)

    @property
    def bundle(self) -> Bundle:
        bundle = self._bundle_ref()
        if bundle is None:
            raise RuntimeError(
                "the bundle of this policy is gone; keep a reference to the bundle with its policy"
            )
        return bundle

    def with_flags(self, bundle: Bundle) -> Policy:
        """This policy for ``bundle``: this policy's bundle with other flags (a signed flags update on the
        bundle in force, :func:`with_flags`). Only the flags of each rule are computed again."""
        policy = copy.copy(self)
        policy._bundle_ref = weakref.ref(bundle)
        policy.rules = {}
        for slug, rule in self.rules.items():
            off_read, off_write = _flags_off(bundle.flags, self.role, slug)
            policy.rules[slug] = replace(rule, flag_off_read=off_read, flag_off_write=off_write)
        return policy

    def rule(self, slug: str) -> ServerRule:
        rule = self.rules.get(slug)
        if rule is None:  # a server the bundle has never heard of: compiled (and denied) once
            rule = self.rules[slug] = _compile_server(self.bundle, self.role, slug)
        return rule


_WORD_SPLIT = re.compile(r"[^a-z0-9]+")


def production_words_in(text: str, words: tuple[str, ...]) -> list[str]:
    """Production words appearing as whole tokens of a URL, path or slug (``prod-db`` yes, ``domain`` no)."""
    tokens = set(_WORD_SPLIT.split(text.lower()))
    return [w for w in words if w.lower() in tokens]


def forbidden_pattern_hit(candidates: list[str], patterns: tuple[str, ...]) -> tuple[str, str] | None:
    for pattern in patterns:
        p = pattern.lower()
        for c in candidates:
            if c and fnmatchcase(c.lower(), p):
                return pattern, c
    return None


def _flags_off(flags: tuple[Flag, ...], role: str, slug: str) -> tuple[Flag | None, Flag | None]:
    """The first flag that is off for ``role`` covering reads, and writes, of server ``slug`` (None: none).

    The one rule turning flags into decisions, for a compiled bundle and for a flags update alike.
    """
    off_read = off_write = None
    for flag in flags:
        if flag.server is not None and flag.server != slug:
            continue
        if flag.is_on_for(role):
            continue
        if flag.capability in ("read", "all") and off_read is None:
            off_read = flag
        if flag.capability in ("write", "all") and off_write is None:
            off_write = flag
    return off_read, off_write


def _compile_server(bundle: Bundle, role: str, slug: str) -> ServerRule:
    env = bundle.environment_policy
    spec = bundle.servers.get(slug)
    role_policy = bundle.roles.get(role)

    role_violation = None
    if role_policy is None:
        role_violation = f"role '{role}' is not defined in bundle v{bundle.version} (default deny)"
    elif slug in role_policy.forbidden_servers:
        role_violation = f"server '{slug}' is forbidden for role '{role}'"
    elif slug not in role_policy.allowed_servers:
        role_violation = f"server '{slug}' is not in the allowlist of role '{role}' (default deny)"

    binding = env.bindings.get(slug)
    binding_target = binding.target if binding else None
    candidates = [slug, binding_target or "", (spec.url or "") if spec else ""]
    env_violation = None
    if binding is None:
        env_violation = f"server '{slug}' is not bound in environment '{env.name}'"
    else:
        hit = forbidden_pattern_hit(candidates, env.forbidden_patterns)
        if hit:
            env_violation = f"server '{slug}': '{hit[1]}' matches forbidden pattern '{hit[0]}' of environment '{env.name}'"
    words = [w for c in candidates for w in production_words_in(c, bundle.production_url_words)]
    if env.requires_authorization:
        production_reason = f"environment '{env.name}' requires explicit human authorization"
    elif words:
        production_reason = f"server '{slug}' looks like production (words: {', '.join(sorted(set(words)))})"
    else:
        production_reason = ""

    flag_off_read, flag_off_write = _flags_off(bundle.flags, role, slug)
    limits = bundle.rate_limits.per_server.get(slug)
    has_limits = limits is not None and any(
        v is not None
        for v in (
            limits.max_calls_per_session,
            limits.max_calls_per_minute,
            limits.max_read_calls_per_session,
            limits.max_write_calls_per_session,
        )
    )
    timeout = (
        float(limits.max_execution_time_seconds) if limits and limits.max_execution_time_seconds else None
    )
    tools = {}
    if spec:
        for name, tp in spec.tools.items():
            tools[name] = ToolRule(
                name, tp.tool_class != "read", tp.approval_required, tp.definition_hash, timeout
            )
    return ServerRule(
        slug=slug,
        role_violation=role_violation,
        env_violation=env_violation,
        binding_target=binding_target,
        binding_read_only=binding is None or binding.permission == "read_only",
        production=env.requires_authorization or bool(words),
        production_reason=production_reason,
        grant_windows=tuple(
            (g.starts_at.timestamp(), g.ends_at.timestamp())
            for g in bundle.grants
            if g.role == role and slug in g.servers
        ),
        flag_off_read=flag_off_read,
        flag_off_write=flag_off_write,
        limits=limits,
        has_limits=has_limits,
        timeout=timeout,
        tools=tools,
        unknown_tool=ToolRule("", True, False, None, timeout),  # no class information: a write
        read_rule=ToolRule("", False, False, None, timeout),
        server_requests=spec.server_requests if spec else ServerRequestPolicy(),
        unknown_denied=spec is None or spec.allow_unknown_tools == "deny",
    )


_POLICIES: dict[int, dict[str, Policy]] = {}
# a bundle made by with_flags → the bundle it was made from (whose compiled policies it reuses)
_FLAGS_BASE: dict[int, weakref.ref[Bundle]] = {}
_NOT_FLAGS = tuple(name for name in Bundle.model_fields if name != "flags")


def with_flags(bundle: Bundle, flags: tuple[Flag, ...]) -> Bundle:
    """``bundle`` with ``flags`` instead of its own (a verified flags update applied to the bundle in force).

    :func:`compile_policy` of the result starts from ``bundle``'s compiled policy and computes only the
    flags again (:meth:`Policy.with_flags`), instead of compiling every server anew.
    """
    derived = bundle.model_copy(update={"flags": tuple(flags)})
    _FLAGS_BASE[id(derived)] = weakref.ref(bundle)
    weakref.finalize(derived, _FLAGS_BASE.pop, id(derived), None)
    return derived


def _flags_base(bundle: Bundle) -> Bundle | None:
    """The bundle ``bundle`` was made from by :func:`with_flags`, when it differs from it in nothing but its
    flags (every other field the very same object: a shallow copy), else None."""
    ref = _FLAGS_BASE.get(id(bundle))
    base = ref() if ref is not None else None
    if base is None or any(getattr(base, name) is not getattr(bundle, name) for name in _NOT_FLAGS):
        return None
    return base


def compile_policy(bundle: Bundle, role: str) -> Policy:
    """The bundle's lookups for ``role``, computed once per (immutable) bundle and role."""
    per_bundle = _POLICIES.get(id(bundle))
    if per_bundle is None:
        per_bundle = _POLICIES[id(bundle)] = {}
        weakref.finalize(bundle, _POLICIES.pop, id(bundle), None)
    policy = per_bundle.get(role)
    if policy is None:
        base = _flags_base(bundle)
        policy = Policy(bundle, role) if base is None else compile_policy(base, role).with_flags(bundle)
        per_bundle[role] = policy
    return policy


# --- messages (cold path) -------------------------------------------------------------------------------


_LAST_SECOND: tuple[int, str] = (-1, "")  # the last whole second formatted (two events per call share it)


def iso_ts(now: float) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-11-24T09:00:00.123Z``."""
    global _LAST_SECOND
    seconds = int(now)
    last, text = _LAST_SECOND  # one tuple: read and replaced whole, safe from any thread
    if last != seconds:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _LAST_SECOND = (seconds, text)
    return f"{text}.{int((now - seconds) * 1000):03d}Z"


def format_last_calls(state: SessionState, extra: CallRecord | None = None) -> str:
    calls = list(state.last_calls)
    if extra is not None:
        calls = [*calls, extra][-3:]
    if not calls:
        return "Last 3 calls: (none yet)"
    lines = ["Last 3 calls:"]
    for i, c in enumerate(calls, 1):
        lines.append(f"  {i}. {c.ts} {c.server}.{c.tool} args={c.args_summary} → {c.outcome}")
    return "\n".join(lines)


def _refused_line(call: ToolCall) -> str:
    return f"Refused call: {call.server}.{call.tool} args={summarize_arguments(call.arguments)}"


def trigger_message(
    trigger: Trigger, reason: str, state: SessionState, call: ToolCall, *, halted: bool = True
) -> str:
    head = f"MCP_KILL_SWITCH_TRIGGERED: {trigger} ({TRIGGER_TITLES.get(trigger, trigger)})"
    parts = [head, reason, _refused_line(call)]
    if halted:
        parts.append(f"Session halted. {CONTINUE_HINT}")
    parts.append(format_last_calls(state))
    return "\n".join(parts)


def _halt(trigger: Trigger, reason: str, state: SessionState, call: ToolCall) -> Decision:
    return Decision(
        Verdict.REFUSE,
        trigger,
        trigger_message(trigger, reason, state, call),
        SessionStatus.HALTED,
        reason=reason.splitlines()[0],
    )


def kill_switch_line(flag: Flag) -> str:
    since = flag.changed_at.strftime("%Y-%m-%dT%H:%M:%SZ") if flag.changed_at else "unknown"
    return f"MCP_KILL_SWITCH: {flag.name} disabled by governance flag — reason: {flag.reason or 'none given'} — since {since}"


def rate_limit_summary(policy: Policy, state: SessionState) -> str:
    gl = policy.global_limits
    lines = []
    total = state.total_calls
    if gl.max_calls_per_session:
        pct = 100 * total / gl.max_calls_per_session
        lines.append(f"Current session: {total}/{gl.max_calls_per_session} total calls ({pct:.0f}%)")
    else:
        lines.append(f"Current session: {total} total calls")
    if state.per_server:
        lines.append("Server breakdown:")
    for slug in sorted(state.per_server):
        c = state.per_server[slug]
        lim = policy.rule(slug).limits or ServerLimits()
        bits = [_ratio(c.calls, lim.max_calls_per_session, "calls")]
        if lim.max_read_calls_per_session is not None or c.reads:
            bits.append(_ratio(c.reads, lim.max_read_calls_per_session, "reads"))
        if lim.max_write_calls_per_session is not None or c.writes:
            bits.append(_ratio(c.writes, lim.max_write_calls_per_session, "writes"))
        lines.append(f"  {slug}: " + ", ".join(bits))
    return "\n".join(lines)


def _ratio(n: int, limit: int | None, what: str) -> str:
    if not limit:
        return f"{n} {what}"
    return f"{n}/{limit} {what} ({100 * n / limit:.0f}%)"


# --- the engine (hot path) -------------------------------------------------------------------------------


def _in_window(window: list[float], now: float) -> int:
    return len(window) - bisect_right(window, now - MINUTE)


def pause_point(limit: int, percent: int | None) -> int | None:
    """Calls allowed before the session pauses: ``floor(limit * percent / 100)``; None when no pause."""
    if not percent or percent >= 100:
        return None
    point = math.floor(limit * percent / 100)
    return point if 0 < point < limit else None


def _limits(
    policy: Policy, rule: ServerRule, state: SessionState, is_write: bool, call: ToolCall, now: float
) -> Decision | None:
    gl = policy.global_limits
    counters = state.per_server.get(rule.slug)
    calls = counters.calls if counters else 0
    reads = counters.reads if counters else 0
    writes = counters.writes if counters else 0
    # (key, count, limit) for per-session limits, which also pause
    session_limits: list[tuple[str, int, int, str]] = []
    if gl.max_calls_per_session is not None:
        session_limits.append(("global.calls", state.total_calls, gl.max_calls_per_session, "session calls"))
    lim = rule.limits
    if lim is not None:
        if lim.max_calls_per_session is not None:
            session_limits.append(
                (f"{rule.slug}.calls", calls, lim.max_calls_per_session, f"calls to {rule.slug}")
            )
        if not is_write and lim.max_read_calls_per_session is not None:
            session_limits.append(
                (f"{rule.slug}.reads", reads, lim.max_read_calls_per_session, f"read calls to {rule.slug}")
            )
        if is_write and lim.max_write_calls_per_session is not None:
            session_limits.append(
                (
                    f"{rule.slug}.writes",
                    writes,
                    lim.max_write_calls_per_session,
                    f"write calls to {rule.slug}",
                )
            )
    for _key, count, limit, what in session_limits:
        if count >= limit:
            return _rate_halt(policy, state, call, f"Limit reached: {count}/{limit} {what} in this session.")
    if gl.max_calls_per_minute is not None:
        n = _in_window(state.minute, now)
        if n >= gl.max_calls_per_minute:
            return _rate_halt(
                policy, state, call, f"Limit reached: {n}/{gl.max_calls_per_minute} calls in the last minute."
            )
    if lim is not None and lim.max_calls_per_minute is not None:
        n = _in_window(counters.minute, now) if counters else 0
        if n >= lim.max_calls_per_minute:
            return _rate_halt(
                policy,
                state,
                call,
                f"Limit reached: {n}/{lim.max_calls_per_minute} calls to {rule.slug} in the last minute.",
            )
    if policy.pause_percent:
        for key, count, limit, what in session_limits:
            point = pause_point(limit, policy.pause_percent)
            if point is not None and count >= point and key not in state.pauses_passed:
                text = (
                    "MCP RATE LIMIT ALERT\n"
                    f"Paused at {count}/{limit} {what} ({100 * count / limit:.0f}%): the next call would take "
                    f"it past the pause threshold of {policy.pause_percent}%.\n"
                    f"{rate_limit_summary(policy, state)}\n"
                    f"{_refused_line(call)}\n"
                    "Session paused: review the calls so far; no MCP call will run until a person allows this "
                    "session to continue (portal: Sessions → this session → Allow to continue).\n"
                    f"{format_last_calls(state)}"
                )
                reason = f"Paused at {count}/{limit} {what} (pause threshold {policy.pause_percent}%)."
                return Decision(
                    Verdict.REFUSE,
                    Trigger.RATE_LIMIT,
                    text,
                    SessionStatus.PAUSED,
                    pause_key=key,
                    reason=reason,
                )
    return None


def _rate_halt(policy: Policy, state: SessionState, call: ToolCall, reason: str) -> Decision:
    return _halt(Trigger.RATE_LIMIT, f"{reason}\n{rate_limit_summary(policy, state)}", state, call)


def _expired(policy: Policy, call: ToolCall) -> Decision:
    return Decision(
        Verdict.REFUSE,
        Trigger.BUNDLE_EXPIRED,
        f"MCP call refused: policy bundle v{policy.version} expired at {iso_ts(policy.expires_at)} and no newer "
        "verified bundle is available (the gateway fails closed until one arrives).\n" + _refused_line(call),
    )


def _not_active(state: SessionState, call: ToolCall) -> Decision:
    if state.state == SessionStatus.PAUSED:
        why = f"This session is paused ({state.trigger or 'rate_limit'}): {state.state_reason}"
    elif state.state == SessionStatus.HALTED:
        why = f"This session is halted by trigger {state.trigger or 'unknown'}: {state.state_reason}"
    else:
        why = "This session has ended."
    return Decision(
        Verdict.REFUSE,
        Trigger.SESSION_HALTED,
        f"MCP call refused. {why}\n{CONTINUE_HINT}\n{_refused_line(call)}",
    )


def _flag_off(flag: Flag, state: SessionState, call: ToolCall) -> Decision:
    return Decision(
        Verdict.REFUSE,
        Trigger.KILL_SWITCH_FLAG,
        kill_switch_line(flag)
        + "\n"
        + trigger_message(
            Trigger.KILL_SWITCH_FLAG, f"Flag '{flag.name}' is off for role '{state.role}'.", state, call
        ),
        SessionStatus.HALTED,
    )


def decide(bundle: Bundle | Policy, state: SessionState, call: ToolCall, now: float) -> Decision:
    """Decide one ``tools/call``. ``now`` is a Unix timestamp (``time.time()``)."""
    policy = bundle if type(bundle) is Policy else compile_policy(bundle, state.role)  # type: ignore[arg-type]

    # 0. a bundle past its expiry is never enforced: fail closed
    if now >= policy.expires_at:
        return _expired(policy, call)

    # 1. halted or paused session
    if state.state != SessionStatus.ACTIVE:
        return _not_active(state, call)

    rule = policy.rules.get(call.server) or policy.rule(call.server)
    tool = (rule.tools.get(call.tool) or rule.unknown_tool) if call.method is None else rule.read_rule
    is_write = tool.is_write

    # 1b. a tool whose live definition differs from the approved one (hidden from tools/list)
    if call.definition_changed:
        return _halt(
            Trigger.TOOL_DEFINITION_CHANGED,
            f"Tool '{call.server}.{call.tool}' changed its definition since it was approved; it is hidden until "
            "the portal approves the new definition.",
            state,
            call,
        )

    # 2. governance flags (kill switch)
    flag = rule.flag_off_write if is_write else rule.flag_off_read
    if flag is not None:
        return _flag_off(flag, state, call)

    # 3. role allowlist (trigger 1)
    if rule.role_violation is not None:
        return _halt(Trigger.UNAUTHORIZED_SERVER, rule.role_violation.capitalize() + ".", state, call)

    # 4. environment binding, forbidden patterns, production without a live grant (trigger 3)
    if rule.env_violation is not None:
        return _halt(Trigger.PRODUCTION_ENVIRONMENT, rule.env_violation.capitalize() + ".", state, call)
    if call.uri is not None:
        hit = forbidden_pattern_hit([call.uri], policy.forbidden_patterns)
        if hit:
            return _halt(
                Trigger.PRODUCTION_ENVIRONMENT,
                f"Resource '{hit[1]}' of '{rule.slug}' matches forbidden pattern '{hit[0]}' of environment "
                f"'{policy.environment}'.",
                state,
                call,
            )
    if rule.production:
        for start, end in rule.grant_windows:
            if start <= now < end:
                break
        else:
            return _halt(
                Trigger.PRODUCTION_ENVIRONMENT,
                f"{rule.production_reason.capitalize()}: no live production-access grant for role "
                f"'{state.role}' on '{rule.slug}'. Request one in the portal (Access requests).",
                state,
                call,
            )

    # 4b. a tool the bundle does not know (added by the upstream at run time, or never approved);
    # refused, not halting: the agent did nothing wrong, the tool awaits an admin's review
    if rule.unknown_denied and call.method is None and call.tool not in rule.tools:
        return Decision(
            Verdict.REFUSE,
            Trigger.UNKNOWN_TOOL,
            f"MCP call refused (trigger {Trigger.UNKNOWN_TOOL}): tool '{call.server}.{call.tool}' is not in the "
            "approved tool list of the policy bundle; it was reported to the portal for review and stays hidden "
            "until an admin approves and classifies it.\n" + _refused_line(call),
        )

    # 5. write while the session or the binding is read-only (trigger 2)
    if is_write and (state.read_only or rule.binding_read_only):
        where = (
            "the session is declared read-only"
            if state.read_only
            else (f"the binding of '{rule.slug}' in environment '{policy.environment}' is read_only")
        )
        return _halt(
            Trigger.WRITE_IN_READ_SESSION,
            f"'{call.server}.{call.tool}' is a write tool and {where}.",
            state,
            call,
        )

    # 6. rate limits (trigger 4); pause at the pause threshold
    if policy.has_global_limits or rule.has_limits:
        limited = _limits(policy, rule, state, is_write, call, now)
        if limited is not None:
            return limited

    # 7. cascade write chain (trigger 6)
    if is_write:
        chain = state.write_chain
        resource = call_resource(call.server, call.arguments)
        n = len(chain) + (resource not in chain)
        if n >= policy.cascade_threshold:
            resources = chain if resource in chain else [*chain, resource]
            targets = ", ".join(f"{s}:{t or '(no target)'}" for s, t in resources)
            return _halt(
                Trigger.CASCADE_WRITE_CHAIN,
                f"This would be write {n} in a row across different resources ({targets}); the threshold is "
                f"{policy.cascade_threshold}. Confirm the chain was intended before continuing.",
                state,
                call,
            )

    # 8. approval-required tools wait for a person
    if tool.approval_required:
        return Decision(
            Verdict.APPROVAL,
            Trigger.APPROVAL_REQUIRED,
            f"'{call.server}.{call.tool}' requires a person's approval for every call.\n{_refused_line(call)}",
            timeout=tool.allow.timeout,
        )

    return tool.allow


# --- after the call -----------------------------------------------------------------------------------------


def result_rows(structured: Any) -> int | None:
    """Rows a result reports: ``{"rows": [...]}`` or ``{"row_count"|"rows_returned": n}``."""
    if isinstance(structured, dict):
        rows = structured.get("rows")
        if isinstance(rows, list):
            return len(rows)
        for key in ("row_count", "rows_returned"):
            n = structured.get(key)
            if isinstance(n, int) and not isinstance(n, bool):
                return n
    return None


def check_result(
    bundle: Bundle | Policy,
    state: SessionState,
    call: ToolCall,
    *,
    result_bytes: int,
    rows: int | None = None,
) -> Decision | None:
    """Post-call checks; a Decision means: withhold the result and halt (trigger 5)."""
    policy = bundle if type(bundle) is Policy else compile_policy(bundle, state.role)  # type: ignore[arg-type]
    rule = policy.rule(call.server)
    lim = rule.limits
    reason = None
    if lim is not None and lim.max_response_bytes is not None and result_bytes > lim.max_response_bytes:
        reason = f"The result is {result_bytes} bytes, over max_response_bytes {lim.max_response_bytes} for '{rule.slug}'."
    elif result_bytes > policy.large_data_bytes and not state.declared_large_data:
        reason = (
            f"The result is {result_bytes} bytes, over {policy.large_data_bytes} bytes, and the session did not "
            "declare large data (--declare-large-data)."
        )
    elif (
        rows is not None
        and lim is not None
        and lim.max_rows_returned is not None
        and rows > lim.max_rows_returned
    ):
        reason = (
            f"The result has {rows} rows, over max_rows_returned {lim.max_rows_returned} for '{rule.slug}'."
        )
    if reason is None:
        return None
    text = trigger_message(Trigger.LARGE_DATA_RETURN, reason + " The result was withheld.", state, call)
    text = text.replace("Refused call:", "Withheld call:", 1)
    return Decision(Verdict.REFUSE, Trigger.LARGE_DATA_RETURN, text, SessionStatus.HALTED, reason=reason)


# --- requests an upstream server makes of the agent's side (sampling, elicitation, roots) ----------------


@dataclass(slots=True)
class ServerRequestDecision:
    """Whether a server-to-client request reaches the agent; ``changes`` are applied to its params first."""

    allowed: bool
    reason: str = ""
    changes: dict[str, Any] = field(default_factory=dict)


def url_domain_allowed(url: str, domains: tuple[str, ...]) -> bool:
    """An https URL whose host is one of ``domains`` or a subdomain of one."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
    except ValueError:
        return False
    if parts.scheme != "https" or not host:
        return False
    for domain in domains:
        d = domain.strip().lstrip("*.").rstrip(".").lower()
        if d and (host == d or host.endswith("." + d)):
            return True
    return False


def decide_server_request(
    policy: Policy, state: SessionState | None, server: str, method: str, params: dict[str, Any], now: float
) -> ServerRequestDecision:
    """Decide a server-to-client request by the server's ``server_requests`` policy (default deny sampling).

    ``params`` are the request's wire params (camelCase). A server the role may not use here, an expired
    bundle or a session that is not active gets nothing from the agent.
    """
    if now >= policy.expires_at:
        return ServerRequestDecision(False, f"policy bundle v{policy.version} expired")
    if state is not None and state.state != SessionStatus.ACTIVE:
        return ServerRequestDecision(False, f"the agent session is {state.state}")
    rule = policy.rule(server)
    if rule.role_violation is not None:
        return ServerRequestDecision(False, rule.role_violation)
    if rule.env_violation is not None:
        return ServerRequestDecision(False, rule.env_violation)
    sr = rule.server_requests
    if method == "sampling/createMessage":
        if not sr.sampling:
            return ServerRequestDecision(
                False, f"server '{server}' may not ask the agent's model (sampling is off)"
            )
        if params.get("tools") and not sr.sampling_tools:
            return ServerRequestDecision(
                False, f"server '{server}' may not give tools to a sampling request (sampling_tools is off)"
            )
        changes: dict[str, Any] = {}
        cap = sr.sampling_max_tokens
        max_tokens = params.get("maxTokens")
        if cap is not None and (not isinstance(max_tokens, int) or max_tokens > cap):
            changes["maxTokens"] = cap
        return ServerRequestDecision(True, changes=changes)
    if method == "elicitation/create":
        if params.get("mode") == "url":
            url = str(params.get("url") or "")
            if not url_domain_allowed(url, sr.elicitation_url_domains):
                return ServerRequestDecision(
                    False,
                    f"server '{server}' may not send the user to {url[:200]!r}: not an https URL on an "
                    "allowlisted domain (elicitation_url_domains)",
                )
            return ServerRequestDecision(True)
        if not sr.elicitation:
            return ServerRequestDecision(
                False, f"server '{server}' may not ask the user questions (elicitation is off)"
            )
        return ServerRequestDecision(True)
    if method == "roots/list":
        if not sr.roots:
            return ServerRequestDecision(
                False, f"server '{server}' may not list the agent's roots (roots is off)"
            )
        return ServerRequestDecision(True)
    return ServerRequestDecision(False, f"{method} is not a request the gateway forwards")


def decide_task(policy: Policy, state: SessionState, call: ToolCall, now: float) -> Decision:
    """Decide whether a task the session created may go on, and be polled (``tasks/get``, ``tasks/result``).

    The call that created the task was decided in full when it was made (:func:`decide`); a poll is not a
    new call (no rate limit, no cascade), but the rules that stop calls already made stop the task too:
    an expired bundle, a halted or ended session (a paused one keeps its tasks: the calls were allowed),
    and a kill-switch flag now off for the task's server and capability, which halts the session as the
    next call would. Anything refused here is cancelled upstream by the gateway (:mod:`mcpgov.tasks`).
    """
    if now >= policy.expires_at:
        return _expired(policy, call)
    if state.state in (SessionStatus.HALTED, SessionStatus.ENDED):
        return _not_active(state, call)
    rule = policy.rules.get(call.server) or policy.rule(call.server)
    flag = rule.flag_off_write if rule.tool(call.tool).is_write else rule.flag_off_read
    if flag is not None:
        return _flag_off(flag, state, call)
    return rule.tool(call.tool).allow
