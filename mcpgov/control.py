"""The gateway's conversation with the portal about its agent sessions (``docs/enforcer-api.md``).

A session is opened on the portal, its halts and pauses are reported there (reviewers see them and can
release them), a person's decisions (release, end, per-call approvals) are long-polled back, and the
session is ended when the gateway stops. Every request is retried while the portal is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2

from mcpgov.audit import (
    SHIPPER_CURSOR_INTERVAL,
    SHIPPER_LINGER,
    SHIPPER_MAX_LINGER,
    AuditSpool,
    ShipError,
    Shipper,
    ShipperThread,
)
from mcpgov.portal_client import LONG_POLL_SECONDS, PortalClient, PortalError
from mcpgov.retry import retry
from mcpgov.session import SessionState, SessionStatus

log = logging.getLogger("mcpgov.gateway")


@dataclass
class AgentSession:
    state: SessionState
    spool: AuditSpool
    opened: anyio.Event = field(default_factory=anyio.Event)
    approvals: dict[str, tuple[anyio.Event, list[str]]] = field(default_factory=dict)
    # the portal's control_version when it recorded our halt/pause: only a later decision releases it
    halt_recorded_at: int | None = None
    run_id: str = ""
    agent: Any = None  # mcpgov.identity.AgentIdentity
    last_active: float = field(default_factory=time.monotonic)  # the last request of this session
    # the wider MCP surface (mcpgov.surface): the agent's connection, for notifications and the requests
    # upstreams make of it; its logging level; its resource subscriptions; the tool names it was last shown
    peer: Any = None  # mcp.server.session.ServerSession
    log_level: str | None = None
    subscriptions: set[str] = field(default_factory=set)
    listed_tools: frozenset[str] | None = None

    @property
    def id(self) -> str:
        return self.state.session_id


class SessionControl:
    """One gateway's sessions as the portal sees them, through one enforcement client's token."""

    def __init__(self, portal: PortalClient) -> None:
        self.portal = portal

    async def open(self, sess: AgentSession, meta: dict[str, Any]) -> None:
        """Open the session on the portal, retrying until it answers (the shipper also opens sessions lazily)."""
        await retry(
            lambda: self.portal.open_session(meta),
            what=f"opening session {sess.id} on the portal",
            logger=log,
        )
        sess.opened.set()

    async def report_state(self, sess: AgentSession, trigger: str | None, reason: str) -> None:
        """PATCH the session's new state to the portal (reviewers see it and can release it).

        Retried until the portal has it, as long as the session is still in that state: a halted
        session can only be released once the portal knows it halted.
        """
        st = sess.state
        reported = st.state
        await sess.opened.wait()
        try:
            resp = await retry(
                lambda: self.portal.patch_session(
                    st.session_id,
                    state=reported,
                    trigger=trigger,
                    reason=reason,
                    last_calls=[c.as_dict() for c in st.last_calls],
                ),
                what=f"reporting the state of session {st.session_id}",
                give_up_on=(PortalError,),
                stop=lambda: st.state != reported,
                logger=log,
            )
        except PortalError as exc:
            log.error("portal refused the state of session %s: %s", st.session_id, exc)
            return
        if (
            resp is not None
            and reported in (SessionStatus.HALTED, SessionStatus.PAUSED)
            and st.state == reported
        ):
            sess.halt_recorded_at = int(resp.get("control_version") or 0)

    async def follow(self, sess: AgentSession) -> None:
        """Long-poll a person's decisions (release / end, and per-call approvals) until the session ends."""
        await sess.opened.wait()
        while sess.state.state != SessionStatus.ENDED:
            resp = await retry(
                lambda: self.portal.control(
                    sess.id, since=sess.state.control_version, wait=LONG_POLL_SECONDS
                ),
                what=f"control poll for session {sess.id}",
                stop=lambda: sess.state.state == SessionStatus.ENDED,
                logger=log,
            )
            if resp is not None and apply_control(sess, resp):
                await anyio.sleep(0.2)  # the halt report's answer decides it; ask again shortly

    async def report_end(self, session_id: str, marker: dict[str, Any]) -> None:
        """PATCH ``ended`` from a spool's end record (:meth:`mcpgov.audit.AuditSpool.mark_end`).

        A halted or paused session's end carries its trigger and last calls, so the end does not erase
        the halt. Raises :class:`ShipError` while the portal cannot take it (the shipper retries); an
        answer the portal will never change (400, 409) is logged and counts as delivered.
        """
        try:
            await self.portal.patch_session(
                session_id,
                state=SessionStatus.ENDED,
                trigger=marker.get("trigger"),
                reason=str(marker.get("reason") or ""),
                last_calls=marker.get("last_calls"),
            )
        except PortalError as exc:
            if exc.status == 404:
                raise ShipError(str(exc), missing_session=True) from exc
            if exc.status in (400, 409):
                log.error("portal refused the end of session %s: %s", session_id, exc)
                return
            raise ShipError(str(exc)) from exc
        except httpx2.HTTPError as exc:
            raise ShipError(f"portal unreachable: {exc.__class__.__name__}: {exc}") from exc


def apply_control(sess: AgentSession, resp: dict[str, Any]) -> bool:
    """Apply one control answer: wake the calls waiting for approval; release or end the session.

    True when the answer was left for later (a release that may predate our own halt report)."""
    st = sess.state
    version = int(resp.get("control_version") or 0)
    for approval in resp.get("approvals") or ():
        pending = sess.approvals.get(str(approval.get("call_id")))
        if pending is not None:
            pending[1].append(str(approval.get("decision")))
            pending[1].append(f"{approval.get('by') or 'a reviewer'}: {approval.get('reason') or ''}")
            pending[0].set()
    if version <= st.control_version:
        return False
    state = resp.get("state")
    if state == SessionStatus.ACTIVE and st.state in (SessionStatus.HALTED, SessionStatus.PAUSED):
        if sess.halt_recorded_at is None:
            # our halt report is still on its way: whether this decision came after it is not known
            # yet, so it is not consumed (the next poll returns it again, once the report is answered)
            return True
        st.control_version = version
        # a decision made before the portal recorded this halt is not a release of it
        if version <= sess.halt_recorded_at:
            return False
        log.warning(
            "session %s released by %s: %s", st.session_id, resp.get("decided_by"), resp.get("reason")
        )
        sess.halt_recorded_at = None
        st.release()
        return False
    st.control_version = version
    if state == SessionStatus.ENDED and st.state != SessionStatus.ENDED:
        log.warning("session %s ended by %s", st.session_id, resp.get("decided_by"))
        st.end(str(resp.get("reason") or "ended by a reviewer"))
    return False


def shipper_thread(portal: PortalClient, spool_dir: Path) -> ShipperThread:
    """The audit shipper of a gateway, started in its own thread (call from the gateway's event loop).

    It gets its own portal client on its own loop (same token); a 401 that client sees is the kill
    switch of the gateway's client too, handed over to the gateway's loop.
    """
    loop = asyncio.get_running_loop()

    def revoked() -> None:
        with contextlib.suppress(RuntimeError):  # the gateway's loop is closing
            loop.call_soon_threadsafe(portal.mark_revoked)

    def make() -> tuple[Shipper, Any]:
        client = portal.sibling(revoked)
        shipper = Shipper(
            spool_dir,
            client.post_events,
            client.open_session,
            end_session=SessionControl(client).report_end,
            linger=SHIPPER_LINGER,
            max_linger=SHIPPER_MAX_LINGER,
            cursor_interval=SHIPPER_CURSOR_INTERVAL,
        )
        return shipper, client.aclose

    thread = ShipperThread(make)
    thread.start()
    return thread
