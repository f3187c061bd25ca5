"""The gateway against the REAL portal: the journeys tests/mcpgov/test_gateway_portal_e2e.py proves against
PortalTestDouble, here with the portal under uvicorn on the test database (PostgreSQL), real
`python -m mcpgov gateway` subprocesses on stdio driven by the SDK client, and real upstreams
(mcp-server-time, @modelcontextprotocol/server-filesystem).

- audit delivery: the portal's events equal the gateway's spool, one INTENT + RESULT per call, the
  stored hash chain verifies (`manage.py verify_audit`);
- a portal outage mid-session loses and duplicates nothing, and calls stay enforced meanwhile;
- halt → the portal shows it → a reviewer releases it → the gateway continues;
- `mcpgov audit-check` fails until a reviewer explains the failures and acknowledges the session;
- a role losing a server reaches the running gateway within about a second.

Every portal-side decision is made through the services (as the portal's views do), in this process;
the portal process learns of it through its real-time fallback poll, as it would from another worker.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest
from django.db import connections
from mcp import Client, StdioServerParameters

from audit.models import AgentSession, AuditEvent
from audit.services.digests import audit_verify
from audit.services.review import failed_call_explain, session_acknowledge
from audit.services.sessions import session_release
from governance.choices import RuleKind
from governance.models import McpTool, RoleServerRule
from governance.services.bundles import team_bundles_rebuild
from governance.services.environments import binding_set
from governance.services.roles import role_server_add, role_server_remove
from governance.services.servers import server_create
from governance.services.signing import jwks_document
from mcpgov.audit import read_events
from portal.errors import Conflict
from tests.conftest import _database_url, free_port, spawn, stderr_tail
from tests.e2e.portal_world import PY, ROLE, ROOT, TIME_ARGS, build_world

pytestmark = [pytest.mark.slow]

FILESYSTEM_SERVER = ROOT / "node_modules" / ".bin" / "mcp-server-filesystem"
NOW_UTC = ("time__get_current_time", {"timezone": "UTC"})


def text(result) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def in_thread(fn, *args, **kwargs):
    """ORM work off the event loop (its own connection, closed after)."""

    def run():
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    return await anyio.to_thread.run_sync(run)


def poll(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Call `predicate` until it returns something truthy; that value. Generous: the machine is loaded."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s (last: {value!r})")
        time.sleep(interval)


# --- the portal as a process we can stop and start again on the same port -------------------------


class PortalProcess:
    """uvicorn serving the portal on the test database, like tests/conftest.py's `portal_server`,
    but stoppable and restartable on one fixed port (the gateway's --portal URL stays valid)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "DJANGO_DEBUG": "1",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "CELERY_BROKER_URL": "",
        }
        deadline = time.monotonic() + 60
        while True:  # the port may linger briefly after a stop
            self.proc = spawn(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "config.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                    "--timeout-graceful-shutdown",
                    "2",
                ],
                cwd=ROOT,
                env=env,
            )
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return
                except OSError:
                    time.sleep(0.1)
            err = stderr_tail(self.proc) if self.proc.poll() is not None else ""
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"portal did not start within 60 s: {err}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def down(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return False
        except OSError:
            return True


@pytest.fixture
def restartable_portal(transactional_db):
    portal = PortalProcess()
    portal.start()
    try:
        yield portal
    finally:
        portal.stop()


# --- the team: `time` (reads) and `filesystem` (read_text_file, write_file), both allowed --------


@pytest.fixture
def workdir():
    # a neutral prefix: pytest's tmp_path carries the test name, and words such as "production"
    # in a path are exactly what the gateway refuses
    if not FILESYSTEM_SERVER.exists():
        pytest.fail(f"{FILESYSTEM_SERVER} is missing: run `make upstreams` (npm install)")
    base = Path(tempfile.mkdtemp(prefix="mcpgov-gp-"))
    (base / "files").mkdir()
    yield base
    shutil.rmtree(base, ignore_errors=True)


class Team:
    def __init__(self, world, workdir: Path) -> None:
        self.world = world
        self.workdir = workdir
        self.files = workdir / "files"
        self.keys = workdir / "keys.json"
        self.config = workdir / "mcp.json"
        self.filesystem = None

    def gateway(self, portal_url: str, token: str, name: str, *flags: str) -> StdioServerParameters:
        gw = self.workdir / name
        gw.mkdir()
        args = [
            "-m",
            "mcpgov",
            "gateway",
            "--portal",
            portal_url,
            "--token",
            token,
            "--keys",
            str(self.keys),
            "--env",
            "development",
            "--role",
            ROLE,
            "--config",
            str(self.config),
            "--spool",
            str(gw / "spool"),
            "--state-dir",
            str(gw / "state"),
            *flags,
        ]
        return StdioServerParameters(command=PY, args=args, cwd=str(ROOT), env={"MCPGOV_LOG_LEVEL": "ERROR"})

    def spool(self, name: str) -> list[dict]:
        [path] = (self.workdir / name / "spool").glob("*.jsonl")
        return [event for _, event in read_events(path)[0]]  # a live spool ends in preallocated NULs

    def session_id(self, name: str) -> str:
        paths = poll(lambda: list((self.workdir / name / "spool").glob("*.jsonl")), what="the spool file")
        assert len(paths) == 1, paths
        return paths[0].stem


@pytest.fixture
def team(transactional_db, workdir) -> Team:
    world = build_world()
    t = Team(world, workdir)
    fs = server_create(
        team=world.team,
        actor=world.admin,
        slug="filesystem",
        category="filesystem",
        transport="stdio",
        command=str(FILESYSTEM_SERVER),
        args=[str(t.files)],
    )
    McpTool.objects.create(server=fs, name="read_text_file", read_only_hint=True, destructive_hint=False)
    McpTool.objects.create(server=fs, name="write_file", read_only_hint=False, destructive_hint=False)
    role_server_add(role=world.role, server=fs, kind=RuleKind.ALLOWED, actor=world.admin)
    binding_set(
        environment=world.env("development"),
        server=fs,
        actor=world.admin,
        target=str(t.files),
        permission="read_write",
    )
    team_bundles_rebuild(team_id=world.team.pk, reason="e2e set-up: filesystem")
    t.filesystem = fs
    t.keys.write_text(json.dumps(jwks_document(team=world.team)))  # pinned out of band, as an operator would
    t.config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "time": {"command": PY, "args": TIME_ARGS},
                    "filesystem": {"command": str(FILESYSTEM_SERVER), "args": [str(t.files)]},
                }
            }
        )
    )
    return t


# --- portal-side reads ---------------------------------------------------------------------------


COMPARED = (
    "seq",
    "call_id",
    "phase",
    "server",
    "tool",
    "status",
    "trigger",
    "arguments",
    "args_summary",
    "result_summary",
    "bytes",
    "bundle_version",
    "result",
)


def stored(sid: str) -> list[dict]:
    return list(AuditEvent.objects.filter(session_id=sid).order_by("seq").values(*COMPARED))


def delivered(sid: str, count: int) -> bool:
    """The portal holds exactly `count` events of the session (its chain head says so too)."""
    s = AgentSession.objects.filter(pk=sid).first()
    return (
        s is not None and s.last_seq == count and AuditEvent.objects.filter(session_id=sid).count() == count
    )


def wait_delivered(t: Team, name: str, sid: str, timeout: float = 60.0) -> list[dict]:
    """Wait until everything in the gateway's spool is stored; the spool's events."""

    def done():
        spooled = t.spool(name)
        return spooled if delivered(sid, len(spooled)) else None

    return poll(done, timeout=timeout, interval=0.2, what=f"delivery of session {sid}")


def session_in(sid: str, state: str):
    return AgentSession.objects.filter(pk=sid, state=state).first()


def assert_spool_equals_portal(spooled: list[dict], sid: str) -> None:
    rows = stored(sid)
    summaries = ("args_summary", "result_summary")  # null on the wire is stored as ""
    assert [{k: (e.get(k) or "") if k in summaries else e.get(k) for k in COMPARED} for e in spooled] == rows
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    # one INTENT and one RESULT per call, in that order
    phases: dict[str, list[str]] = {}
    for r in rows:
        phases.setdefault(r["call_id"], []).append(r["phase"])
    assert all(p == ["intent", "result"] for p in phases.values()), phases


def verify_audit_command() -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": _database_url(), "CELERY_BROKER_URL": ""}
    return subprocess.run(
        [PY, "manage.py", "verify_audit"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


# --- 1. audit delivery ---------------------------------------------------------------------------


def test_every_call_reaches_the_portal_once_and_the_chain_verifies(portal_server, team):
    [token] = team.world.issue("development")

    async def scenario():
        async with Client(team.gateway(portal_server, token, "gw", "--read-write"), mode="legacy") as c:
            for _ in range(3):
                r = await c.call_tool(*NOW_UTC)
                assert not r.is_error, text(r)
            r = await c.call_tool(
                "filesystem__write_file", {"path": str(team.files / "a.txt"), "content": "hi"}
            )
            assert not r.is_error, text(r)
            r = await c.call_tool("filesystem__read_text_file", {"path": str(team.files / "a.txt")})
            assert text(r) == "hi"
            r = await c.call_tool("shell__run", {"command": "id"})  # not allowed for the role
            assert r.is_error and "unauthorized_server" in text(r), text(r)
            sid = await in_thread(team.session_id, "gw")
            # delivered while the gateway still runs (nothing left for a later gateway to ship)
            return sid, await in_thread(wait_delivered, team, "gw", sid)

    sid, spooled = anyio.run(scenario)
    assert len(spooled) == 12
    assert_spool_equals_portal(spooled, sid)
    [refused] = [e for e in stored(sid) if e["phase"] == "result" and e["status"] == "blocked"]
    assert (refused["server"], refused["tool"], refused["trigger"]) == ("shell", "run", "unauthorized_server")
    assert Counter(e["status"] for e in stored(sid) if e["phase"] == "result") == {"success": 5, "blocked": 1}

    session = AgentSession.objects.get(pk=sid)
    assert (session.calls_total, session.calls_blocked, session.calls_failed) == (6, 1, 0)
    assert session.role == ROLE and session.read_only is False
    assert session.state in ("halted", "ended")  # halted by the refusal, ended when the agent left

    _, _, problems = audit_verify(team=team.world.team)
    assert problems == []
    proc = verify_audit_command()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all intact" in proc.stdout


# --- 2. portal outage --------------------------------------------------------------------------


def test_portal_outage_mid_session_loses_and_duplicates_nothing(restartable_portal, team):
    portal = restartable_portal
    [token] = team.world.issue("development")
    counts = {}

    async def scenario():
        async with Client(team.gateway(portal.url, token, "gw", "--read-write"), mode="legacy") as c:
            for _ in range(3):
                assert not (r := await c.call_tool(*NOW_UTC)).is_error, text(r)
            sid = await in_thread(team.session_id, "gw")
            counts["before"] = len(await in_thread(wait_delivered, team, "gw", sid))

            await anyio.to_thread.run_sync(portal.stop)
            assert portal.down()
            # the portal is gone: calls are still decided with the cached bundle, both ways
            for _ in range(3):
                assert not (r := await c.call_tool(*NOW_UTC)).is_error, text(r)
            r = await c.call_tool(
                "filesystem__write_file", {"path": str(team.files / "o.txt"), "content": "o"}
            )
            assert not r.is_error, text(r)
            r = await c.call_tool("shell__run", {"command": "id"})
            assert r.is_error and "unauthorized_server" in text(r), text(r)
            r = await c.call_tool(*NOW_UTC)
            assert r.is_error and "halted" in text(r), text(r)
            counts["during"] = await in_thread(AuditEvent.objects.filter(session_id=sid).count)
            counts["spooled"] = len(team.spool("gw"))

            await anyio.to_thread.run_sync(portal.start)
            spooled = await in_thread(wait_delivered, team, "gw", sid, 90.0)
            # the halt that happened during the outage reaches the portal too (retried PATCH)
            halted = await in_thread(poll, lambda: session_in(sid, "halted"), 60.0, 0.2, "halted session")
            return sid, spooled, halted

    sid, spooled, halted = anyio.run(scenario)
    assert counts["before"] == 6 and counts["during"] == 6
    assert counts["spooled"] == len(spooled) == 2 * (3 + 3 + 1 + 1 + 1)
    assert_spool_equals_portal(spooled, sid)
    rows = AuditEvent.objects.filter(session_id=sid)
    assert rows.count() == rows.values("seq").distinct().count() == len(spooled)
    # counters would double on a re-ingested batch; blocked: shell__run and the call refused as halted
    session = AgentSession.objects.get(pk=sid)
    assert (session.calls_total, session.calls_blocked, session.event_count) == (9, 2, len(spooled))
    assert halted.trigger == "unauthorized_server"
    assert (team.files / "o.txt").read_text() == "o"
    _, _, problems = audit_verify(team=team.world.team)
    assert problems == []


# --- 3. halt and release -----------------------------------------------------------------------


def test_halt_shows_in_the_portal_and_a_reviewers_release_lets_the_gateway_continue(portal_server, team):
    [token] = team.world.issue("development")
    reviewer = team.world.reviewer

    async def scenario():
        async with Client(team.gateway(portal_server, token, "gw", "--read-only"), mode="legacy") as c:
            assert not (r := await c.call_tool(*NOW_UTC)).is_error, text(r)
            r = await c.call_tool(
                "filesystem__write_file", {"path": str(team.files / "w.txt"), "content": "x"}
            )
            assert r.is_error and "write_in_read_session" in text(r), text(r)
            sid = await in_thread(team.session_id, "gw")
            halted = await in_thread(poll, lambda: session_in(sid, "halted"), 30.0, 0.1, "halted session")
            r = await c.call_tool(*NOW_UTC)
            assert r.is_error and "halted" in text(r), text(r)

            await in_thread(
                session_release, session=halted, reviewer=reviewer, reason="e2e: the write was a typo"
            )
            t0 = time.monotonic()
            while (r := await c.call_tool(*NOW_UTC)).is_error:
                assert "halted" in text(r), text(r)
                assert time.monotonic() - t0 < 15, "the release did not reach the gateway"
                await anyio.sleep(0.05)
            delay = time.monotonic() - t0
            # released, still read-only: the next write halts again
            r = await c.call_tool(
                "filesystem__write_file", {"path": str(team.files / "w2.txt"), "content": "x"}
            )
            assert r.is_error and "write_in_read_session" in text(r), text(r)
            spooled = await in_thread(wait_delivered, team, "gw", sid)
            return sid, halted, delay, spooled

    sid, halted, delay, spooled = anyio.run(scenario)
    print(f"\nrelease → next call allowed: {delay * 1000:.0f} ms")
    # the loop above bounds it (a lost release fails); no speed goal in a test
    assert halted.trigger == "write_in_read_session"
    assert [c["tool"] for c in halted.last_calls] == ["get_current_time", "write_file"]
    assert halted.last_calls[-1]["outcome"] == "blocked (write_in_read_session)"
    assert not (team.files / "w.txt").exists() and not (team.files / "w2.txt").exists()
    assert_spool_equals_portal(spooled, sid)
    statuses = [(e["tool"], e["status"], e["trigger"]) for e in spooled if e["phase"] == "result"]
    assert statuses[:2] == [
        ("get_current_time", "success", None),
        ("write_file", "blocked", "write_in_read_session"),
    ]
    assert statuses[-1] == ("write_file", "blocked", "write_in_read_session")


# --- 4. audit-check ----------------------------------------------------------------------------


def audit_check(portal_url: str, sid: str, token: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "mcpgov", "audit-check", "--session", sid, "--portal", portal_url, "--token", token],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_audit_check_passes_only_after_a_reviewer_explains_failures_and_acknowledges(portal_server, team):
    [token] = team.world.issue("development")
    reviewer = team.world.reviewer

    async def scenario():
        async with Client(team.gateway(portal_server, token, "gw", "--read-write"), mode="legacy") as c:
            assert not (r := await c.call_tool(*NOW_UTC)).is_error, text(r)
            r = await c.call_tool("filesystem__read_text_file", {"path": str(team.files / "missing.txt")})
            assert r.is_error, text(r)  # the upstream's own error: status=fail
            sid = await in_thread(team.session_id, "gw")
            spooled = await in_thread(wait_delivered, team, "gw", sid)
        # the agent left: the gateway reports the session ended
        ended = await in_thread(poll, lambda: session_in(sid, "ended"), 30.0, 0.1, "ended session")
        return sid, spooled, ended

    sid, spooled, session = anyio.run(scenario)
    [failed] = [e for e in spooled if e["phase"] == "result" and e["status"] == "fail"]
    assert session.calls_failed == 1

    proc = audit_check(portal_server, sid, token)
    assert proc.returncode != 0, proc.stdout + proc.stderr

    with pytest.raises(Conflict) as exc:  # a failure nobody explained blocks the acknowledgement
        session_acknowledge(session=session, reviewer=reviewer, note="looked fine")
    assert exc.value.code == "unexplained_failures" and exc.value.extra["call_ids"] == [failed["call_id"]]
    assert audit_check(portal_server, sid, token).returncode != 0

    failed_call_explain(
        session=session,
        reviewer=reviewer,
        call_id=failed["call_id"],
        explanation="read a file that was never created; harmless",
    )
    assert audit_check(portal_server, sid, token).returncode != 0  # explained, not yet acknowledged
    session_acknowledge(session=session, reviewer=reviewer, note="reviewed for the e2e test")

    proc = audit_check(portal_server, sid, token)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- 5. a bundle change reaches the running gateway -------------------------------------------------


def test_role_losing_a_server_reaches_the_running_gateway(portal_server, team):
    [token] = team.world.issue("development")
    world = team.world
    (team.files / "r.txt").write_text("before")
    read = ("filesystem__read_text_file", {"path": str(team.files / "r.txt")})

    def remove_filesystem() -> None:
        rule = RoleServerRule.objects.get(role=world.role, server=team.filesystem, kind=RuleKind.ALLOWED)
        role_server_remove(rule=rule, actor=world.admin)  # rebuilds and publishes the bundle on commit

    async def scenario():
        async with Client(team.gateway(portal_server, token, "gw", "--read-write"), mode="legacy") as c:
            r = await c.call_tool(*read)
            assert not r.is_error and text(r) == "before", text(r)
            await in_thread(remove_filesystem)
            t0 = time.monotonic()
            while not (r := await c.call_tool(*read)).is_error:
                assert time.monotonic() - t0 < 15.0, "the new bundle did not reach the gateway"
                await anyio.sleep(0.05)
            delay = time.monotonic() - t0
            assert "unauthorized_server" in text(r), text(r)
            sid = await in_thread(team.session_id, "gw")
            spooled = await in_thread(wait_delivered, team, "gw", sid)
            return delay, sid, spooled

    delay, sid, spooled = anyio.run(scenario)
    print(f"\nrole_server_remove → refusal: {delay * 1000:.0f} ms")
    # 0.5-0.9 s measured on a quiet machine (the change is made in this process, so the portal
    # learns it from its 0.15 s fallback poll, then answers the gateway's long poll); up to 2.8 s
    # with the 2 cores shared by other test runs (load 4+), the time going to the portal's answer,
    # not the gateway. The loop's bound catches a lost change; the speed goal is a benchmark's.
    results = [e for e in spooled if e["phase"] == "result"]
    assert results[-1]["status"] == "blocked" and results[-1]["trigger"] == "unauthorized_server"
    assert results[-1]["bundle_version"] > results[0]["bundle_version"]
    assert_spool_equals_portal(spooled, sid)
