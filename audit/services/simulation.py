"""Simulating a policy draft over recorded traffic: every call the audit trail holds for a window is
decided again, with the gateways' own pure `decide()`, under the live bundle and under the draft's,
session by session (each with its own simulated state, so halts and rate limits carry over).

The baseline is the live bundle replayed by the same engine, not the recorded outcome: both sides
then see the same grants, the same clock and the same arguments, and every difference reported is
caused by the draft alone. See docs/policy-lifecycle.md.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from audit.choices import Phase
from audit.models import AuditEvent
from governance.models import Environment, PolicyDraft
from governance.services.bundles import bundle_compile
from governance.services.drafts import draft_preview
from mcpgov.bundle import Bundle
from mcpgov.decision import Policy, ToolCall, check_result, compile_policy
from mcpgov.session import SessionState, SessionStatus
from mcpgov.shadow import shadow_decide

DEFAULT_WINDOW = timedelta(days=7)
MAX_LISTED = 200  # differences listed per kind and environment (all are counted)


@dataclass(frozen=True)
class CallChange:
    session_id: str
    seq: int
    ts: datetime
    role: str
    server: str
    tool: str
    live: str  # "allow", "approval" or "refuse (<trigger>)"
    draft: str
    reason: str


@dataclass
class EnvironmentSimulation:
    environment: str
    calls: int = 0
    sessions: int = 0
    newly_refused: list[CallChange] = field(default_factory=list)
    newly_allowed: list[CallChange] = field(default_factory=list)
    newly_refused_count: int = 0
    newly_allowed_count: int = 0
    refused_by_trigger: dict[str, int] = field(default_factory=dict)
    halted_sessions: list[str] = field(default_factory=list)  # would halt under the draft, not today


@dataclass
class SimulationReport:
    since: datetime
    until: datetime
    environments: list[EnvironmentSimulation]
    seconds: float
    error: str = ""

    @property
    def calls(self) -> int:
        return sum(e.calls for e in self.environments)


class _Side:
    """One bundle replayed over one session's calls."""

    __slots__ = ("bundle", "policies", "state")

    def __init__(self, bundle: Bundle, policies: dict[str, Policy]):
        self.bundle = bundle
        self.policies = policies

    def start(self, session: dict[str, Any]) -> None:
        self.state = SessionState(
            session_id=str(session["id"]),
            role=session["role"],
            read_only=session["read_only"],
            declared_large_data=session["declared_large_data"],
        )

    def policy(self, role: str) -> Policy:
        policy = self.policies.get(role)
        if policy is None:
            policy = self.policies[role] = compile_policy(self.bundle, role)
        return policy

    def call(self, call: ToolCall, now: float, nbytes: int | None) -> tuple[str, str]:
        state = self.state
        policy = self.policy(state.role)
        verdict, trigger, reason = shadow_decide(policy, state, call, now)  # the gateways' shadow step
        if verdict == "refuse":
            return f"refuse ({trigger})", reason
        if nbytes is not None:
            post = check_result(policy, state, call, result_bytes=nbytes)
            if post is not None:
                state.halt(post.trigger, post.reason)
                return f"refuse ({post.trigger})", post.reason
        return verdict, ""


def _simulate_environment(
    env: Environment, live: Bundle, draft: Bundle, since: datetime, until: datetime
) -> EnvironmentSimulation:
    out = EnvironmentSimulation(environment=env.name)
    base = AuditEvent.objects.filter(session__environment=env, ts__gte=since, ts__lt=until)
    result_bytes = dict(
        base.filter(phase=Phase.RESULT, bytes__isnull=False)
        .values_list("call_id", "bytes")
        .iterator(chunk_size=5000)
    )
    intents = (
        base.filter(phase=Phase.INTENT)
        .order_by("session_id", "seq")
        .values_list(
            "session_id",
            "seq",
            "call_id",
            "ts",
            "server",
            "tool",
            "arguments",
            "session__role",
            "session__read_only",
            "session__declared_large_data",
        )
    )
    live_side, draft_side = _Side(live, {}), _Side(draft, {})
    current = None
    refused_by: dict[str, int] = defaultdict(int)
    for row in intents.iterator(chunk_size=5000):
        session_id, seq, call_id, ts, server, tool, arguments = row[:7]
        if session_id != current:
            if current is not None:
                _close(out, str(current), live_side, draft_side)
            current = session_id
            out.sessions += 1
            session = {"id": session_id, "role": row[7], "read_only": row[8], "declared_large_data": row[9]}
            live_side.start(session)
            draft_side.start(session)
        out.calls += 1
        call = ToolCall(server, tool, arguments if isinstance(arguments, dict) else None)
        now = ts.timestamp()
        nbytes = result_bytes.get(call_id)
        was, _ = live_side.call(call, now, nbytes)
        would, reason = draft_side.call(call, now, nbytes)
        if was == would:
            continue
        change = CallChange(
            str(session_id),
            seq,
            ts,
            draft_side.state.role,
            server,
            tool,
            was,
            would,
            reason.splitlines()[0] if reason else "",
        )
        if would.startswith("refuse"):
            out.newly_refused_count += 1
            refused_by[would[8:-1]] += 1
            if len(out.newly_refused) < MAX_LISTED:
                out.newly_refused.append(change)
        elif was.startswith("refuse"):
            out.newly_allowed_count += 1
            if len(out.newly_allowed) < MAX_LISTED:
                out.newly_allowed.append(change)
    if current is not None:
        _close(out, str(current), live_side, draft_side)
    out.refused_by_trigger = dict(sorted(refused_by.items()))
    return out


def _close(out: EnvironmentSimulation, session_id: str, live: _Side, draft: _Side) -> None:
    if draft.state.state == SessionStatus.HALTED and live.state.state != SessionStatus.HALTED:
        out.halted_sessions.append(session_id)


def draft_simulate(
    *,
    draft: PolicyDraft,
    since: datetime | None = None,
    until: datetime | None = None,
    environment: str | None = None,
) -> SimulationReport:
    """Replay the window's recorded calls (default: the last 7 days) under the live and the draft bundle."""
    started = time.perf_counter()
    until = until or timezone.now()
    since = since or until - DEFAULT_WINDOW
    preview = draft_preview(draft=draft)
    results = []
    for env_preview in preview.environments:
        env = env_preview.environment
        if env.pk is None or env_preview.draft_bundle is None:
            continue  # an environment the draft adds has no recorded traffic
        if environment and env.name != environment:
            continue
        live = bundle_compile(environment=env).bundle
        results.append(_simulate_environment(env, live, env_preview.draft_bundle, since, until))
    return SimulationReport(
        since=since,
        until=until,
        environments=results,
        seconds=time.perf_counter() - started,
        error=preview.error,
    )
