"""The gateway in portal mode, against PortalTestDouble (a real HTTP server speaking docs/enforcer-api.md):
bundle long poll, session open/PATCH, the control long poll (release, approvals) and audit shipping.

The portal team adds the same journeys against the real Django portal.
"""

from __future__ import annotations

import time

import anyio
import pytest
from mcp import Client

from tests.mcpgov.test_gateway_e2e import text, write

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("filesystem_server")]


async def in_thread(fn, *args):
    return await anyio.to_thread.run_sync(fn, *args)


def only_session(portal) -> str:
    assert portal.wait_for(lambda: len(portal.sessions) == 1)
    return next(iter(portal.sessions))


def test_halt_is_reported_and_a_release_lets_the_session_continue(world, portal):
    portal.publish(world.signer.sign_doc(world.doc()), 1)
    world.write_config(("time", "filesystem"))

    async def scenario():
        async with Client(world.gateway("--read-only", portal=portal), mode="legacy") as c:
            assert not (await c.call_tool("time__get_current_time", {"timezone": "UTC"})).is_error
            sid = await in_thread(only_session, portal)
            assert portal.sessions[sid]["role"] == "code_agent" and portal.sessions[sid]["read_only"] is True
            r = await write(c, world.files / "w.txt")
            assert "write_in_read_session" in text(r)
            assert await in_thread(portal.wait_for, lambda: portal.patches)
            patched_sid, body = portal.patches[0]
            assert (
                patched_sid == sid
                and body["state"] == "halted"
                and body["trigger"] == "write_in_read_session"
            )
            assert [c["tool"] for c in body["last_calls"]] == ["get_current_time", "write_file"]
            assert body["last_calls"][-1]["outcome"] == "blocked (write_in_read_session)"
            r = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert r.is_error and "halted" in text(r)

            portal.release(sid)
            t0 = time.monotonic()
            while (await c.call_tool("time__get_current_time", {"timezone": "UTC"})).is_error:
                assert time.monotonic() - t0 < 45, "release did not reach the gateway"
                await anyio.sleep(0.05)
            # released, still read-only: the next write halts again
            assert "write_in_read_session" in text(await write(c, world.files / "w2.txt"))

        # every event reached the portal, in order, once
        assert await in_thread(
            portal.wait_for, lambda: sum(1 for e in portal.events[sid] if e["phase"] == "result") >= 5
        )

    anyio.run(scenario)
    assert not (world.files / "w.txt").exists() and not (world.files / "w2.txt").exists()
    sid = next(iter(portal.events))
    seqs = [e["seq"] for e in portal.events[sid]]
    assert seqs == list(range(1, len(seqs) + 1)) and portal.duplicates == 0
    local = world.events()
    assert [e["seq"] for e in local] == seqs
    assert portal.reported_versions and portal.reported_versions[-1] == 1


def test_flag_disabled_in_the_portal_stops_writes(world, portal):
    portal.publish(world.signer.sign_doc(world.doc()), 1)
    world.write_config(("time", "filesystem"))

    async def scenario():
        async with Client(world.gateway("--read-write", portal=portal), mode="legacy") as c:
            assert not (await write(c, world.files / "before.txt")).is_error
            doc = world.doc(
                version=2,
                flags=[
                    {
                        "name": "mcp.filesystem.write",
                        "server": "filesystem",
                        "capability": "write",
                        "enabled": False,
                        "reason": "incident 42",
                        "changed_at": "2026-11-24T16:42:00Z",
                    }
                ],
            )
            portal.publish(world.signer.sign_doc(doc), 2)
            # the gateway's long poll picks v2 up: writes are refused from then on (a fresh file per
            # try, so the refused one is known; the bound is generous for a loaded machine)
            t0, tries = time.monotonic(), 0
            while not (r := await write(c, world.files / f"after-{tries}.txt")).is_error:
                assert time.monotonic() - t0 < 30, "the disabled flag did not reach the gateway"
                tries += 1
                await anyio.sleep(0.1)
            assert text(r).startswith("MCP_KILL_SWITCH: mcp.filesystem.write disabled by governance flag")
            refused = world.files / f"after-{tries}.txt"
            # and it stays refused
            assert (await write(c, world.files / "later.txt")).is_error
            return refused

    refused = anyio.run(scenario)
    assert not refused.exists() and not (world.files / "later.txt").exists()
    assert portal.reported_versions[-1] == 2


def test_a_bundle_failing_verification_is_never_used(world, portal):
    portal.publish(world.signer.sign_doc(world.doc()), 1)
    world.write_config(("time", "filesystem"))
    from tests.mcpgov.helpers import Signer

    async def scenario():
        async with Client(world.gateway("--read-write", portal=portal), mode="legacy") as c:
            assert not (await write(c, world.files / "a.txt")).is_error
            # an attacker-signed bundle that would take every server away
            evil = world.doc(version=9)
            evil["roles"]["code_agent"]["allowed_servers"] = []
            portal.publish(Signer().sign_doc(evil), 9)
            await anyio.sleep(1.0)
            r = await c.call_tool("filesystem__read_text_file", {"path": str(world.files / "a.txt")})
            assert not r.is_error  # still enforcing v1

    anyio.run(scenario)
    assert portal.reported_versions[-1] == 1


def test_approval_required_tool_waits_for_a_person(world, portal):
    doc = world.doc()
    doc["servers"]["filesystem"]["tools"]["write_file"]["approval_required"] = True
    portal.publish(world.signer.sign_doc(doc), 1)
    world.write_config(("time", "filesystem"))

    def approve_when_asked(decision: str) -> None:
        def asked():
            return any(
                e["trigger"] == "approval_required" and e["phase"] == "intent" and e["call_id"] not in done
                for evs in portal.events.values()
                for e in evs
            )

        assert portal.wait_for(asked, timeout=10)
        ev = next(
            e
            for evs in portal.events.values()
            for e in evs
            if e["trigger"] == "approval_required" and e["phase"] == "intent" and e["call_id"] not in done
        )
        done.add(ev["call_id"])
        portal.approve(next(iter(portal.sessions)), ev["call_id"], decision)

    done: set[str] = set()

    async def scenario():
        async with Client(world.gateway("--read-write", portal=portal), mode="legacy") as c:
            async with anyio.create_task_group() as tg:
                tg.start_soon(in_thread, approve_when_asked, "approve")
                r = await write(c, world.files / "approved.txt", "yes")
            assert not r.is_error, text(r)
            async with anyio.create_task_group() as tg:
                tg.start_soon(in_thread, approve_when_asked, "deny")
                r = await write(c, world.files / "denied.txt", "no")
            assert r.is_error and "Approval denied by reviewer" in text(r)

    anyio.run(scenario)
    assert (world.files / "approved.txt").read_text() == "yes"
    assert not (world.files / "denied.txt").exists()


def test_portal_outage_and_restarts_lose_no_event(world, portal):
    """Session B runs while the portal is down (cached bundle); a later gateway ships B's events once."""
    portal.publish(world.signer.sign_doc(world.doc()), 1)
    world.write_config(("time", "filesystem"))

    async def session(calls: int) -> None:
        async with Client(world.gateway(portal=portal), mode="legacy") as c:
            for _ in range(calls):
                r = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
                assert not r.is_error, text(r)

    anyio.run(session, 1)  # A: online, caches the bundle
    assert portal.wait_for(lambda: len(portal.sessions) == 1 and len(next(iter(portal.events.values()))) == 2)
    portal.outage = True
    anyio.run(session, 2)  # B: the portal answers 503 to everything
    spooled = {p.stem for p in world.spool.glob("*.jsonl")}
    assert len(spooled) == 2 and len(portal.sessions) == 1
    portal.outage = False
    anyio.run(session, 0)  # C: starts, and its shipper delivers what B left behind
    assert portal.wait_for(
        lambda: (
            len(portal.sessions) == 3
            and all(len(portal.events.get(sid, [])) >= 4 for sid in spooled - set(list(portal.sessions)[:1]))
        ),
        timeout=15,
    )
    b = next(sid for sid in spooled if sid != next(iter(portal.sessions)))
    events = portal.events[b]  # B's two calls, and any request its servers made of the agent (roots/list)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    calls = [(e["tool"], e["phase"]) for e in events if "/" not in e["tool"]]
    assert calls == [("get_current_time", "intent"), ("get_current_time", "result")] * 2
    assert portal.duplicates == 0


def test_a_portal_that_stalls_event_delivery_never_holds_up_a_call(world, portal):
    """The shipper waits on the portal in its own thread: calls are decided, recorded and answered
    while its POST hangs unanswered, and everything is delivered, once and in order, when it answers."""
    portal.publish(world.signer.sign_doc(world.doc()), 1)
    world.write_config(("time",))

    async def scenario():
        async with Client(world.gateway("--read-only", portal=portal), mode="legacy") as c:
            assert not (await c.call_tool("time__get_current_time", {"timezone": "UTC"})).is_error
            sid = await in_thread(only_session, portal)
            assert await in_thread(portal.wait_for, lambda: len(portal.events.get(sid, [])) == 2, 60)
            portal.events_flowing.clear()  # the portal stops answering event deliveries
            assert not (await c.call_tool("time__get_current_time", {"timezone": "UTC"})).is_error
            assert await in_thread(portal.wait_for, lambda: portal.event_posts_waiting == 1, 60)
            for _ in range(30):  # answered while the shipper's POST still hangs
                r = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
                assert not r.is_error
            assert portal.event_posts_waiting == 1 and len(portal.events[sid]) == 2
            assert len([e for e in world.events() if e["phase"] == "result"]) == 32  # all on disk
            portal.events_flowing.set()
            assert await in_thread(portal.wait_for, lambda: len(portal.events[sid]) == 64, 60)

    try:
        anyio.run(scenario)
    finally:
        portal.events_flowing.set()
    sid = next(iter(portal.events))
    assert [e["seq"] for e in portal.events[sid]] == list(range(1, 65))
    assert portal.duplicates == 0
