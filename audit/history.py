"""A session's state history: the one helper that writes a SessionStateChange, and the flag of a halt.

Every state change of a session (a gateway's report, a person's release or end, the portal's
stale end) calls `state_change_record` inside the transaction that changes the state.
"""

from __future__ import annotations

import re

from django.utils import timezone

from audit.choices import Trigger
from audit.models import SessionStateChange

# The gateway's kill-switch reason line (mcpgov.decision.kill_switch_line):
#   "MCP_KILL_SWITCH: <flag name> disabled by governance flag — reason: … — since …"
_KILL_SWITCH_LINE = re.compile(r"^MCP_KILL_SWITCH: (?P<flag>\S+) disabled by governance flag")


def flag_from_reason(trigger: str | None, reason: str) -> str:
    """The flag a kill-switch halt names in its reason ("" for other triggers or other wording)."""
    if trigger != Trigger.KILL_SWITCH_FLAG:
        return ""
    match = _KILL_SWITCH_LINE.match(reason or "")
    return match.group("flag") if match else ""


def state_change_record(
    *,
    session,
    from_state: str,
    to_state: str,
    source: str,
    trigger: str | None = None,
    reason: str = "",
    actor=None,
    decision=None,
    open_calls: list | None = None,
    at=None,
) -> SessionStateChange:
    return SessionStateChange.objects.create(
        session=session,
        from_state=from_state or "",
        to_state=to_state,
        trigger=trigger or "",
        flag=flag_from_reason(trigger, reason),
        source=source,
        actor=actor,
        decision=decision,
        reason=reason or "",
        open_calls=open_calls or [],
        at=at or timezone.now(),
    )


__all__ = ["flag_from_reason", "state_change_record"]
