"""Gateway stops and restarts against the REAL portal (uvicorn on the test database): SIGTERM, SIGINT and
stdin EOF each end the session on the portal with its events delivered; a SIGKILLed gateway's session is
ended by the next gateway on its spool ("gateway restarted") before that one serves.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from audit.models import AgentSession, AuditEvent
from tests.e2e.portal_world import ROOT, build_world, gateway_args, write_gateway_files
from tests.mcpgov.test_lifecycle import BOUND, Wire

pytestmark = [pytest.mark.slow]


@pytest.fixture
def workdir():
    base = Path(tempfile.mkdtemp(prefix="mcpgov-lc-"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _poll(predicate, what: str):
    import time

    deadline = time.monotonic() + BOUND
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _args(world, portal_server, workdir, token):
    keys, config = write_gateway_files(workdir)
    return gateway_args(
        portal=portal_server, token=token, keys=keys, config=config, env="development", workdir=workdir
    )


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "EOF"])
def test_a_stopped_gateway_ends_its_session_on_the_portal(portal_server, workdir, how):
    world = build_world()
    [token] = world.issue("development")
    gw = Wire(_args(world, portal_server, workdir, token), cwd=ROOT, stderr=workdir / "gw.err")
    try:
        gw.handshake()
        r = gw.request("tools/call", {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}})
        assert not r["result"].get("isError"), r
        _poll(lambda: AuditEvent.objects.filter(phase="result").exists(), "the call reached the portal")
        if how == "EOF":
            gw.proc.stdin.close()
        else:
            gw.proc.send_signal(getattr(signal, how))
        assert gw.wait() == 0, gw.stderr()
    finally:
        if gw.proc.poll() is None:
            gw.proc.kill()
    [session] = AgentSession.objects.all()
    assert session.state == "ended", gw.stderr()
    expected = "the agent closed the connection" if how == "EOF" else f"gateway stopped ({how})"
    assert session.state_reason == expected
    assert list(session.events.order_by("seq").values_list("phase", flat=True)) == ["intent", "result"]


def test_restart_recovery_ends_a_killed_gateways_session_on_the_portal(portal_server, workdir):
    world = build_world()
    [token] = world.issue("development")
    args = _args(world, portal_server, workdir, token)
    gw = Wire(args, cwd=ROOT, stderr=workdir / "gw.err")
    try:
        gw.handshake()
        r = gw.request("tools/call", {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}})
        assert not r["result"].get("isError"), r
        _poll(lambda: AgentSession.objects.exists(), "the session reached the portal")
    finally:
        gw.proc.kill()
        gw.proc.wait(timeout=BOUND)
    [first] = AgentSession.objects.all()
    assert first.state == "active"
    nxt = Wire(args, cwd=ROOT, stderr=workdir / "gw2.err")
    try:
        nxt.handshake()
        first.refresh_from_db()
        assert first.state == "ended" and first.state_reason == "gateway restarted", nxt.stderr()
        assert list(first.events.order_by("seq").values_list("phase", flat=True)) == ["intent", "result"]
        nxt.proc.stdin.close()
        assert nxt.wait() == 0
    finally:
        if nxt.proc.poll() is None:
            nxt.proc.kill()
    assert set(AgentSession.objects.values_list("state", flat=True)) == {"ended"}
