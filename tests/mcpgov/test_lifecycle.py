"""The gateway's life as a process: clean stops (SIGTERM, SIGINT, SIGHUP, stdin EOF), a second signal,
restart recovery on a spool whose sessions never got their end report, and ten gateways sharing one
working directory through twenty bundle changes.

Gateways are real ``python -m mcpgov gateway`` processes in front of the real ``mcp-server-time``; the
portal is PortalTestDouble (a real HTTP server speaking docs/enforcer-api.md). The signal tests speak
JSON-RPC over the gateway's pipes by hand because they need the gateway's own pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from tests.mcpgov.conftest import PY, ROOT, TIME_ARGS, start_http_gateway
from tests.mcpgov.portal_double import TOKEN

pytestmark = pytest.mark.slow

BOUND = 60  # seconds: "it happens", never a duration claim


class Wire:
    """A gateway process and its JSON-RPC stdio wire; as a context manager, killed on the way out if it
    is still running (a failed assertion must not leave it behind)."""

    @classmethod
    def gateway(cls, world, portal, *extra: str, name: str = "gw") -> Wire:
        return cls(world.gateway_args(*extra, portal=portal), cwd=ROOT, stderr=world.base / f"{name}.err")

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=BOUND)

    def __init__(self, args: list[str], *, cwd: Path, stderr: Path) -> None:
        self.stderr_path = stderr
        self.proc = subprocess.Popen(
            [PY, *args],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(stderr, "w"),  # noqa: SIM115 (closed with the process)
            env={**os.environ, "MCPGOV_LOG_LEVEL": "WARNING"},
        )
        self.next_id = 0

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            assert line, f"the gateway closed its stdout; stderr:\n{self.stderr()}"
            msg = json.loads(line)
            if msg.get("id") == self.next_id:
                return msg

    def handshake(self) -> dict[str, Any]:
        r = self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return r

    def call_time(self) -> dict[str, Any]:
        return self.request(
            "tools/call", {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}}
        )

    def open_session(self, portal) -> str:
        """Handshake, one governed call, and the session id the portal got."""
        self.handshake()
        assert not self.call_time()["result"].get("isError")
        assert portal.wait_for(lambda: len(portal.sessions) == 1, timeout=BOUND)
        return next(iter(portal.sessions))

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self) -> int:
        return self.proc.wait(timeout=BOUND)


def _session_ended(portal, sid: str) -> bool:
    return portal.sessions.get(sid, {}).get("state") == "ended"


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGHUP", "EOF"])
def test_a_stopped_gateway_ends_its_session_with_its_events_delivered(world, portal, how):
    world.publish(portal)
    world.write_config(("time",))
    with Wire.gateway(world, portal) as gw:
        sid = gw.open_session(portal)
        if how == "EOF":
            gw.proc.stdin.close()
        else:
            gw.proc.send_signal(getattr(signal, how))
        assert gw.wait() == 0, gw.stderr()
    # the portal has the end and every event, INTENT and RESULT, before the process exited
    assert _session_ended(portal, sid), gw.stderr()
    assert [(e["seq"], e["phase"]) for e in portal.events[sid]] == [(1, "intent"), (2, "result")]
    end = [body for s, body in portal.patches if s == sid and body["state"] == "ended"]
    assert len(end) == 1
    expected = "the agent closed the connection" if how == "EOF" else f"gateway stopped ({how})"
    assert end[0]["reason"] == expected
    assert "Traceback" not in gw.stderr()


def test_a_halted_session_keeps_its_trigger_and_last_calls_in_its_end_report(world, portal):
    world.publish(portal)
    world.write_config(("time", "filesystem"))
    with Wire.gateway(world, portal, "--read-only") as gw:
        gw.handshake()
        r = gw.request(
            "tools/call",
            {"name": "filesystem__write_file", "arguments": {"path": str(world.files / "x"), "content": "x"}},
        )
        assert r["result"]["isError"]
        assert portal.wait_for(lambda: any(b["state"] == "halted" for _, b in portal.patches), timeout=BOUND)
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.wait() == 0, gw.stderr()
    sid = next(iter(portal.sessions))
    end = next(b for s, b in portal.patches if s == sid and b["state"] == "ended")
    assert end["trigger"] == "write_in_read_session"
    assert [c["tool"] for c in end["last_calls"]] == ["write_file"]


def test_a_second_signal_exits_at_once_and_the_next_gateway_delivers_what_was_left(world, portal):
    world.publish(portal)
    world.write_config(("time",))
    with Wire.gateway(world, portal) as gw:
        sid = gw.open_session(portal)
        portal.outage = True  # the clean stop cannot deliver: it would wait its bounded time
        gw.proc.send_signal(signal.SIGTERM)
        assert "ending the sessions" in _wait_for_text(gw, "ending the sessions")
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.wait() == 128 + signal.SIGTERM, gw.stderr()
    assert not _session_ended(portal, sid)
    marker = json.loads((world.spool / f"{sid}.end.json").read_text())
    assert marker["reported"] is False and marker["reason"] == "gateway stopped (SIGTERM)"

    portal.outage = False
    with Wire.gateway(world, portal, name="gw2") as nxt:
        nxt.handshake()  # restart recovery runs before the gateway serves
        assert _session_ended(portal, sid), nxt.stderr()
        end = next(b for s, b in portal.patches if s == sid and b["state"] == "ended")
        assert end["reason"] == "gateway stopped (SIGTERM)"
        assert [e["phase"] for e in portal.events[sid]] == ["intent", "result"]
        nxt.proc.stdin.close()
        assert nxt.wait() == 0


def test_restart_recovery_ends_the_sessions_of_a_killed_gateway_before_serving(world, portal):
    world.publish(portal)
    world.write_config(("time",))
    with Wire.gateway(world, portal) as gw:
        sid = gw.open_session(portal)
        gw.proc.kill()  # SIGKILL: no end report, no clean anything
        gw.proc.wait(timeout=BOUND)
    assert not _session_ended(portal, sid)

    with Wire.gateway(world, portal, name="gw2") as nxt:
        nxt.handshake()
        assert _session_ended(portal, sid), nxt.stderr()
        end = next(b for s, b in portal.patches if s == sid and b["state"] == "ended")
        assert end["reason"] == "gateway restarted"
        assert [e["phase"] for e in portal.events[sid]] == ["intent", "result"]
        assert not nxt.call_time()["result"].get("isError")
        nxt.proc.send_signal(signal.SIGTERM)
        assert nxt.wait() == 0
    assert len(portal.sessions) == 2 and all(s["state"] == "ended" for s in portal.sessions.values())
    # ended once each: the second gateway did not report the first session's end again at its own stop
    ends = [s for s, b in portal.patches if b["state"] == "ended"]
    assert sorted(ends) == sorted(portal.sessions)


def _wait_for_text(gw: Wire, needle: str) -> str:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        text = gw.stderr()
        if needle in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared on stderr:\n{gw.stderr()}")


def test_ten_gateways_in_one_directory_survive_twenty_bundle_changes(world, portal):
    """Started as the README shows (no --spool, no --state-dir): they share var/mcpgov/ of the directory."""
    workdir = world.base / "project"
    workdir.mkdir()
    config = workdir / ".mcp.json"
    config.write_text(json.dumps({"mcpServers": {"time": {"command": PY, "args": TIME_ARGS}}}))
    version = 1
    world.publish(portal, world.doc(version=version))
    args = [
        "-m",
        "mcpgov",
        "gateway",
        "--portal",
        portal.url,
        "--token",
        TOKEN,
        "--keys",
        str(world.keys),
        "--env",
        "development",
        "--role",
        "code_agent",
        "--read-only",
        "--config",
        ".mcp.json",
    ]

    def doc_for(v: int) -> dict[str, Any]:
        d = world.doc(version=v)
        if v % 2 == 0:  # even versions take the time server away from the role: tools/list shows it
            d["roles"]["code_agent"]["allowed_servers"] = ["filesystem"]
        return d

    async def scenario() -> None:
        from contextlib import AsyncExitStack

        async with AsyncExitStack() as stack:
            clients = []
            for _ in range(10):
                params = StdioServerParameters(command=PY, args=args, cwd=str(workdir))
                clients.append(await stack.enter_async_context(Client(params, mode="legacy")))
            for v in range(2, 22):
                world.publish(portal, doc_for(v))
                want_time = v % 2 == 1
                for c in clients:
                    deadline = time.monotonic() + BOUND
                    while True:
                        names = [t.name for t in (await c.list_tools()).tools]
                        if ("time__get_current_time" in names) == want_time:
                            break
                        assert time.monotonic() < deadline, f"v{v} never reached a gateway"
                        await anyio.sleep(0.1)
            for c in clients:  # v21 allows time again: every gateway still answers calls
                r = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
                assert not r.is_error

    anyio.run(scenario)
    state = workdir / "var" / "mcpgov" / "state"
    assert json.loads((state / "bundle-state.json").read_text())["acme/development"]["version"] == 21
    assert [p.name for p in state.iterdir() if p.suffix == ".tmp"] == []
    # ten sessions, each ended once with its events delivered (no gateway shipped another's live spool)
    assert portal.wait_for(lambda: sum(s["state"] == "ended" for s in portal.sessions.values()) == 10, BOUND)
    assert portal.duplicates == 0


def test_http_sessions_end_when_the_client_closes_or_goes_idle(world, portal):
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from tests.mcpgov.test_gateway_identity import AGENTS, API_KEY

    world.publish(portal, world.doc(agents=AGENTS))
    world.write_config(("time",))
    gateway = start_http_gateway(world, portal, "--idle-timeout", "3")
    proc, url = gateway.proc, gateway.url
    try:
        # an SDK client that leaves: its DELETE ends the session
        async def closing_client() -> None:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
            async with Client(streamable_http_client(url, http_client=http), mode="legacy") as c:
                assert not (await c.call_tool("time__get_current_time", {"timezone": "UTC"})).is_error

        anyio.run(closing_client)
        assert portal.wait_for(
            lambda: len(portal.sessions) == 1 and _session_ended(portal, next(iter(portal.sessions))), BOUND
        )
        first = next(iter(portal.sessions))
        assert [e["phase"] for e in portal.events[first]] == ["intent", "result"]
        assert next(b for s, b in portal.patches if s == first)["reason"] == "the agent closed the session"

        # a client that goes away without a word: the idle timeout ends it
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {API_KEY}",
        }
        init = {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        }
        with httpx2.Client(timeout=30) as http:
            r = http.post(
                url, headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}
            )
            headers["Mcp-Session-Id"] = r.headers["mcp-session-id"]
            headers["Mcp-Protocol-Version"] = "2025-11-25"
            http.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            call = {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}}
            r = http.post(
                url, headers=headers, json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call}
            )
            assert r.status_code == 200
        assert portal.wait_for(
            lambda: (
                len(portal.sessions) == 2 and all(s["state"] == "ended" for s in portal.sessions.values())
            ),
            BOUND,
        )
        second = next(s for s in portal.sessions if s != first)
        assert next(b for s, b in portal.patches if s == second)["reason"] == "idle for 3s"
        assert [e["phase"] for e in portal.events[second]] == ["intent", "result"]

        # a 2026-07-28 client is stateless (no transport session ends): its run ends when idle
        async def stateless_client() -> None:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
            async with Client(streamable_http_client(url, http_client=http), mode="2026-07-28") as c:
                r = await c.call_tool(
                    "time__get_current_time", {"timezone": "UTC"}, meta={"io.mcpgov/run": "r1"}
                )
                assert not r.is_error

        anyio.run(stateless_client)

        def run_r1() -> str | None:
            return next((sid for sid, meta in portal.sessions.items() if meta.get("run_id") == "r1"), None)

        assert portal.wait_for(lambda: run_r1() is not None and _session_ended(portal, run_r1()), BOUND), (
            portal.sessions,
            gateway.stderr.read_text()[-3000:],
        )
        third = run_r1()
        assert next(b for s, b in portal.patches if s == third)["reason"] == "idle for 3s"
        assert [e["phase"] for e in portal.events[third]] == ["intent", "result"]
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=BOUND) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert all(_session_ended(portal, sid) for sid in portal.sessions)
