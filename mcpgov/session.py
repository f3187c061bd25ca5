"""Per-session enforcement state: counters, per-minute windows, the last calls and the write chain.

The decision engine only reads a :class:`SessionState`; the gateway (its caller) updates it after
each decision with :meth:`SessionState.record_forwarded`, :meth:`record_outcome`, :meth:`halt`, …
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mcpgov.bundle import Trigger


class SessionStatus(StrEnum):
    """The state of an agent session (the portal adds ``refused``: refused at the gate)."""

    ACTIVE = "active"
    PAUSED = "paused"
    HALTED = "halted"
    ENDED = "ended"


MINUTE = 60.0
# Argument names that identify the resource a write acts on, in order of preference.
RESOURCE_KEYS = (
    "path",
    "file_path",
    "filepath",
    "filename",
    "repo_path",
    "repo",
    "repository",
    "source",
    "destination",
    "target",
    "uri",
    "url",
    "table",
    "database",
    "bucket",
    "key",
    "name",
)


def call_resource(server: str, arguments: dict[str, Any] | None) -> tuple[str, str]:
    """The resource a call acts on: the server plus its first target-like argument."""
    if arguments:
        for key in RESOURCE_KEYS:
            value = arguments.get(key)
            if value is not None and value != "":
                return (server, str(value))
    return (server, "")


@dataclass(slots=True)
class CallRecord:
    """One line of the "last three calls" shown when a trigger fires."""

    ts: str
    server: str
    tool: str
    args_summary: str
    outcome: str  # success | fail | blocked (+ detail)

    def as_dict(self) -> dict[str, str]:
        return {
            "ts": self.ts,
            "server": self.server,
            "tool": self.tool,
            "args": self.args_summary,
            "outcome": self.outcome,
        }


@dataclass(slots=True)
class ServerCounters:
    calls: int = 0
    reads: int = 0
    writes: int = 0
    minute: list[float] = field(default_factory=list)  # forwarded-call times, ascending


@dataclass(slots=True)
class SessionState:
    session_id: str
    role: str
    read_only: bool = True
    declared_large_data: bool = False
    state: SessionStatus = SessionStatus.ACTIVE
    trigger: Trigger | None = None
    state_reason: str = ""
    total_calls: int = 0
    blocked_calls: int = 0
    failed_calls: int = 0
    minute: list[float] = field(default_factory=list)
    per_server: dict[str, ServerCounters] = field(default_factory=dict)
    last_calls: deque[CallRecord] = field(default_factory=lambda: deque(maxlen=3))
    # distinct resources written by the current run of consecutive writes
    write_chain: list[tuple[str, str]] = field(default_factory=list)
    # per-session limits whose pause point a person already released
    pauses_passed: set[str] = field(default_factory=set)
    pending_pause: str | None = None
    control_version: int = 0

    @property
    def blocked(self) -> bool:
        return self.state != SessionStatus.ACTIVE

    def counters(self, server: str) -> ServerCounters:
        c = self.per_server.get(server)
        if c is None:
            c = self.per_server[server] = ServerCounters()
        return c

    def record_forwarded(self, server: str, is_write: bool, resource: tuple[str, str], now: float) -> None:
        """Count a call that is being forwarded upstream (refused calls are not counted)."""
        self.total_calls += 1
        _push(self.minute, now)
        c = self.counters(server)
        c.calls += 1
        _push(c.minute, now)
        if is_write:
            c.writes += 1
            if resource not in self.write_chain:
                self.write_chain.append(resource)
        else:
            c.reads += 1
            if self.write_chain:
                self.write_chain.clear()

    def record_outcome(self, record: CallRecord) -> None:
        self.last_calls.append(record)
        if record.outcome.startswith("blocked"):
            self.blocked_calls += 1
        elif record.outcome.startswith("fail"):
            self.failed_calls += 1

    def halt(self, trigger: Trigger | None, reason: str) -> None:
        self.state = SessionStatus.HALTED
        self.trigger = trigger
        self.state_reason = reason

    def pause(self, limit_key: str, reason: str) -> None:
        self.state = SessionStatus.PAUSED
        self.trigger = Trigger.RATE_LIMIT
        self.state_reason = reason
        self.pending_pause = limit_key

    def release(self) -> None:
        """A person allowed the session to continue: the write chain and the pause start over."""
        if self.pending_pause:
            self.pauses_passed.add(self.pending_pause)
            self.pending_pause = None
        self.write_chain.clear()
        self.state = SessionStatus.ACTIVE
        self.trigger = None
        self.state_reason = ""

    def end(self, reason: str = "") -> None:
        self.state = SessionStatus.ENDED
        self.state_reason = reason


def _push(window: list[float], now: float) -> None:
    window.append(now)
    # keep the window short: drop entries older than a minute once it grows
    if len(window) > 64 and window[0] <= now - MINUTE:
        del window[: bisect_right(window, now - MINUTE)]
