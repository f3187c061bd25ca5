"""How a gateway applies the portal's control answers (mcpgov.control.apply_control)."""

from __future__ import annotations

from mcpgov.bundle import Trigger
from mcpgov.control import AgentSession, apply_control
from mcpgov.session import SessionState, SessionStatus


def halted_session() -> AgentSession:
    state = SessionState(session_id="s1", role="code_agent")
    state.halt(Trigger.WRITE_IN_READ_SESSION, "a write in a read-only session")
    return AgentSession(state=state, spool=None)  # type: ignore[arg-type]


def test_a_release_that_arrives_before_our_halt_report_is_answered_is_kept_for_later():
    # Found in a parallel run: the reviewer released while the gateway's halt report was still on its
    # way; the release was consumed as "older than the halt" and the session stayed halted for good.
    sess = halted_session()
    release = {"control_version": 2, "state": "active", "decided_by": "rev", "reason": "go on"}
    assert apply_control(sess, release) is True  # not known yet whether it follows our halt
    assert sess.state.state == SessionStatus.HALTED and sess.state.control_version == 0
    sess.halt_recorded_at = 1  # the portal recorded our halt at version 1
    assert apply_control(sess, release) is False
    assert sess.state.state == SessionStatus.ACTIVE and sess.state.control_version == 2


def test_a_decision_older_than_the_recorded_halt_does_not_release_it():
    sess = halted_session()
    sess.halt_recorded_at = 3
    assert apply_control(sess, {"control_version": 3, "state": "active"}) is False
    assert sess.state.state == SessionStatus.HALTED and sess.state.control_version == 3
