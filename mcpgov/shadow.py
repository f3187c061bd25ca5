"""Shadow mode: a policy draft the portal published as a *shadow bundle* is decided beside the enforced
bundle, with the same ``decide()``, and what it would have done is written into each audit event
(``shadow: {decision, trigger, bundle_version}``) — never enforced.

The shadow JWS is signed with the team's key under its own type (``mcpgov-shadow-bundle+jws``), so the
live path can never install it and this one never takes a live bundle. Each session has its own shadow
state (a shadow halt stops the shadow, not the session). :func:`shadow_decide` is the pure step, shared
with the portal's simulation of recorded traffic; :class:`Shadow` fetches and verifies the bundle.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import httpx2

from mcpgov.bundle import Trigger
from mcpgov.decision import Policy, ToolCall, Verdict, compile_policy, decide
from mcpgov.portal_client import PortalError
from mcpgov.session import SessionState, SessionStatus, call_resource
from mcpgov.verify import SHADOW_JWS_TYPE, BundleVerificationError, VerifiedBundle, verify_bundle

if TYPE_CHECKING:
    from mcpgov.bundle_manager import BundleManager
    from mcpgov.portal_client import PortalClient

log = logging.getLogger("mcpgov.shadow")

SHADOW_POLL_SECONDS = 5.0
MAX_SHADOW_SESSIONS = 10_000  # shadow states kept (the oldest are forgotten first)


def shadow_decide(
    policy: Policy, state: SessionState, call: ToolCall, now: float, *, forwarded: bool = True
) -> tuple[str, Trigger | None, str]:
    """One call decided by a side that is not enforced: ``(verdict, trigger, reason)`` with verdict
    ``allow``, ``approval`` or ``refuse``. The side's own ``state`` moves as the gateway moves a session
    (halt, pause; counters when the call is ``forwarded``)."""
    decision = decide(policy, state, call, now)
    if decision.verdict == Verdict.REFUSE:
        if decision.new_state == SessionStatus.HALTED:
            state.halt(decision.trigger, decision.reason)
        elif decision.new_state == SessionStatus.PAUSED:
            state.pause(decision.pause_key or "", decision.reason)
        return "refuse", decision.trigger, decision.reason
    if forwarded:
        rule = policy.rule(call.server).tool(call.tool)
        state.record_forwarded(call.server, rule.is_write, call_resource(call.server, call.arguments), now)
    if decision.verdict == Verdict.APPROVAL:
        return "approval", Trigger.APPROVAL_REQUIRED, ""
    return "allow", None, ""


class Shadow:
    """The shadow bundle of this gateway's team and environment, if the portal publishes one."""

    def __init__(
        self,
        bundles: BundleManager,
        role: str,
        client: PortalClient,
        *,
        interval: float = SHADOW_POLL_SECONDS,
    ) -> None:
        self.bundles = bundles
        self.role = role
        self.client = client
        self.interval = interval
        self.verified: VerifiedBundle | None = None
        self.policy: Policy | None = None
        self.etag: str | None = None
        self.states: OrderedDict[str, SessionState] = OrderedDict()

    def _set(self, verified: VerifiedBundle | None) -> None:
        self.verified = verified
        self.policy = compile_policy(verified.bundle, self.role) if verified else None
        self.states.clear()  # a new shadow starts every session afresh

    async def refresh(self) -> bool:
        """One request; True when the shadow changed (installed, replaced or dropped)."""
        status, jws, etag = await self.client.fetch_shadow(etag=self.etag)
        if status == 304:
            return False
        if status == 404 or jws is None:
            self.etag = None
            if self.verified is not None:
                log.warning("shadow bundle v%d dropped by the portal", self.verified.version)
                self._set(None)
                return True
            return False
        self.etag = etag
        try:
            verified = verify_bundle(
                jws,
                self.bundles.keys,
                team=self.bundles.team,
                environment=self.bundles.environment,
                typ=SHADOW_JWS_TYPE,
            )
        except BundleVerificationError as exc:
            log.error("REJECTED shadow bundle: %s: %s (no shadow evaluated)", exc.code, exc.message)
            self._set(None)
            return True
        self._set(verified)
        log.warning("evaluating shadow bundle v%d beside the enforced one (not enforced)", verified.version)
        return True

    async def run(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            with contextlib.suppress(httpx2.HTTPError, PortalError):
                await self.refresh()

    def verdict(
        self, live: SessionState, call: ToolCall, now: float, *, forwarded: bool
    ) -> dict[str, Any] | None:
        """What the shadow decides for this call of the live session (None: no shadow in force)."""
        verified, policy = self.verified, self.policy
        if verified is None or policy is None:
            return None
        if verified.bundle.expires_at <= datetime.fromtimestamp(now, UTC):
            self._set(None)
            return None
        state = self.states.get(live.session_id)
        if state is None:
            state = SessionState(
                session_id=live.session_id,
                role=live.role,
                read_only=live.read_only,
                declared_large_data=live.declared_large_data,
            )
            self.states[live.session_id] = state
            while len(self.states) > MAX_SHADOW_SESSIONS:
                self.states.popitem(last=False)
        decision, trigger, _ = shadow_decide(policy, state, call, now, forwarded=forwarded)
        return {
            "decision": decision,
            "trigger": str(trigger) if trigger else None,
            "bundle_version": verified.version,
        }
