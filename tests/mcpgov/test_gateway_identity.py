"""Agent identity on the HTTP transport, end to end: the real gateway process, the SDK's streamable HTTP
client, real upstreams (mcp-server-time, a tiny SDK server adding a tool at run time) and the portal
double. Tokens are minted with PyJWT (an independent JWS implementation), as the portal does.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx2
import jwt
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from mcpgov.audit import read_events
from tests.conftest import free_port
from tests.mcpgov.conftest import PY, ROOT, start_http_gateway
from tests.mcpgov.portal_double import TOKEN, PortalTestDouble

LATE_SERVER = Path(__file__).with_name("late_tool_server.py")
API_KEY = "mcpgov_agent_" + "k" * 32

AGENTS = [
    {
        "id": "11",
        "slug": "coder",
        "roles": ["code_agent"],
        "environments": ["development"],
        "api_key_sha256": [hashlib.sha256(API_KEY.encode()).hexdigest()],
    },
    {"id": "22", "slug": "writer", "roles": ["docs_agent"], "environments": ["development"]},
]


class Http:
    """One gateway process on HTTP with auth, against the portal double."""

    def __init__(self, world, portal: PortalTestDouble, *extra: str, role: str = "code_agent") -> None:
        self.world, self.portal = world, portal
        started = start_http_gateway(world, portal, *extra, role=role)
        self.proc, self.port, self.url, self.stderr = started.proc, started.port, started.url, started.stderr

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.stderr.read_text(errors="replace")

    def token(self, agent: str = "11", **claims: Any) -> str:
        now = int(time.time())
        spec = next(a for a in AGENTS if a["id"] == agent)
        body = {
            "iss": self.portal.url,
            "aud": self.url,
            "sub": f"agent:{agent}",
            "client_id": f"client-{agent}",
            "team": "acme",
            "agent": spec["slug"],
            "roles": spec["roles"],
            "environments": spec["environments"],
            "scope": "mcp",
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        body.update(claims)
        return jwt.encode(
            body,
            self.world.signer.key,
            algorithm="EdDSA",
            headers={"kid": self.world.signer.kid, "typ": "at+jwt"},
        )

    def client(self, token: str, mode: str = "2026-07-28") -> Client:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        return Client(streamable_http_client(self.url, http_client=http), mode=mode)


def base_doc(world, **overrides: Any) -> dict[str, Any]:
    doc = world.doc(agents=AGENTS)
    doc["roles"]["code_agent"]["allowed_servers"].append("late")
    doc["servers"]["late"] = {
        "category": "other",
        "transport": "stdio",
        "command": PY,
        "args": [str(LATE_SERVER)],
        "tools": {"hello": {"class": "read"}},
    }
    doc["environment_policy"]["bindings"]["late"] = {"target": "local", "permission": "read_only"}
    doc.update(overrides)
    return doc


@pytest.fixture
def gw(world, portal):
    world.publish(portal, base_doc(world))
    world.write_config(("time", "filesystem"), extra={"late": {"command": PY, "args": [str(LATE_SERVER)]}})
    started: list[Http] = []

    def start(*extra: str, **kw: Any) -> Http:
        h = Http(world, portal, *extra, **kw)
        started.append(h)
        return h

    yield start
    for h in started:
        if h.proc.poll() is None:
            h.stop()


def text(result) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


def run(fn) -> None:
    anyio.run(fn)


def test_no_token_is_401_with_the_protected_resource_metadata(gw, portal):
    g = gw("--read-only")
    r = httpx2.post(g.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    metadata_url = f"http://127.0.0.1:{g.port}/.well-known/oauth-protected-resource/mcp"
    assert f'resource_metadata="{metadata_url}"' in challenge
    for url in (metadata_url, f"http://127.0.0.1:{g.port}/.well-known/oauth-protected-resource"):
        meta = httpx2.get(url).json()
        assert meta["resource"] == g.url
        assert [s.rstrip("/") for s in meta["authorization_servers"]] == [portal.url]
    bad = httpx2.post(g.url, json={}, headers={"Authorization": "Bearer nonsense"})
    assert bad.status_code == 401 and "invalid_token" in bad.headers["www-authenticate"]


def test_agent_token_for_the_role_works_and_other_roles_or_bad_tokens_are_refused(gw, world, portal):
    g = gw("--read-only")

    async def scenario():
        async with g.client(g.token("11")) as c:
            listed = await c.list_tools()
            names = {t.name for t in listed.tools}
            assert "time__get_current_time" in names
            # a per-caller list: never for shared caches, stale within the bundle propagation bound
            assert listed.cache_scope == "private" and 0 < listed.ttl_ms <= 1000
            r = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert not r.is_error, text(r)
            # asking for another role with the same token
            with pytest.raises(MCPError) as exc:
                await c.call_tool(
                    "time__get_current_time", {"timezone": "UTC"}, meta={"io.mcpgov/role": "docs_agent"}
                )
            assert "role_not_allowed" in exc.value.error.message
        # an agent whose token is for docs_agent only
        async with g.client(g.token("22")) as c:
            with pytest.raises(MCPError) as exc:
                await c.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert "may not act as 'code_agent'" in exc.value.error.message
        # the static API key of agent 11
        async with g.client(API_KEY) as c:
            r = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert not r.is_error

    run(scenario)
    post = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    for bad in (
        g.token("11", exp=int(time.time()) - 3600),  # expired
        g.token("11", aud="http://127.0.0.1:1/mcp"),  # for another resource
        g.token("11", iss="http://evil.example"),
        g.token("11", team="other"),
        g.token("11", sub="agent:999"),  # not in the bundle
    ):
        r = httpx2.post(g.url, json=post, headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, bad
    # nothing of these reached the portal as a session of another agent
    assert {s["agent"]["id"] for s in portal.sessions.values()} == {"11"}


def _status_once_refused(g, credential: str) -> int:
    """tools/list with `credential`, asked again until it is 401 (a new bundle applies within the bound)."""
    post = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    deadline = time.monotonic() + 30
    while True:
        r = httpx2.post(g.url, json=post, headers={"Authorization": f"Bearer {credential}"})
        if r.status_code == 401 or time.monotonic() > deadline:
            return r.status_code
        time.sleep(0.1)


def test_agent_revoked_in_a_new_bundle_is_refused_at_once(gw, world, portal):
    g = gw("--read-only")
    token = g.token("11")

    async def ok(credential: str):
        async with g.client(credential) as c:
            assert not (await c.call_tool("time__get_current_time", {"timezone": "UTC"})).is_error

    run(lambda: ok(API_KEY))
    # a revoked API key alone: the bundle no longer lists its hash (the portal's key revocation)
    keyless = [dict(AGENTS[0], api_key_sha256=[]), AGENTS[1]]
    world.publish(portal, base_doc(world, version=world.next_version(), agents=keyless))
    assert _status_once_refused(g, API_KEY) == 401
    run(lambda: ok(token))  # the agent's token still works
    revoked = [dict(AGENTS[0], revoked=True), AGENTS[1]]
    world.publish(portal, base_doc(world, version=world.next_version(), agents=revoked))
    assert _status_once_refused(g, token) == 401
    # a revoked token id (jti) alone
    jti_token = g.token("22")
    jti = jwt.decode(jti_token, options={"verify_signature": False})["jti"]
    agents = [dict(AGENTS[0], revoked=True), dict(AGENTS[1], revoked_jti=[jti])]
    world.publish(portal, base_doc(world, version=world.next_version(), agents=agents))
    assert _status_once_refused(g, jti_token) == 401


def test_two_stateless_clients_get_separate_governance_sessions(gw, world, portal):
    g = gw("--read-only")
    token = g.token("11")

    async def scenario():
        async with g.client(token) as a, g.client(token) as b:
            ra = await a.call_tool(
                "time__get_current_time", {"timezone": "UTC"}, meta={"io.mcpgov/run": "run-a"}
            )
            rb = await b.call_tool(
                "time__get_current_time", {"timezone": "UTC"}, meta={"io.mcpgov/run": "run-b"}
            )
            assert ra.meta["io.mcpgov/run"] == "run-a" and rb.meta["io.mcpgov/run"] == "run-b"
            # a write in run a halts run a only (trigger 2)
            bad = await a.call_tool(
                "filesystem__write_file",
                {"path": str(world.files / "x.txt"), "content": "x"},
                meta={"io.mcpgov/run": "run-a"},
            )
            assert bad.is_error and "write_in_read_session" in text(bad)
            again = await a.call_tool(
                "time__get_current_time", {"timezone": "UTC"}, meta={"io.mcpgov/run": "run-a"}
            )
            assert again.is_error and "halted" in text(again)
            still = await b.call_tool(
                "time__get_current_time", {"timezone": "UTC"}, meta={"io.mcpgov/run": "run-b"}
            )
            assert not still.is_error
            # the trace id of a traceparent is a run id too
            tp = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
            rt = await b.call_tool("time__get_current_time", {"timezone": "UTC"}, meta={"traceparent": tp})
            assert rt.meta["io.mcpgov/run"] == "trace:" + "ab" * 16
            # no run id at all: the agent's default run, named in the answer
            rd = await b.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert rd.meta["io.mcpgov/run"]

    run(scenario)
    assert portal.wait_for(lambda: len(portal.sessions) == 4)
    runs = {s["run_id"]: s for s in portal.sessions.values()}
    assert {"run-a", "run-b", "trace:" + "ab" * 16} <= set(runs)
    assert runs["run-a"]["state"] == "halted" and runs["run-b"]["state"] == "active"
    assert all(s["agent"] == {"id": "11", "slug": "coder", "auth": "oauth"} for s in portal.sessions.values())


def test_a_2025_11_25_client_still_works_and_tools_list_is_private_and_scoped(gw, world, portal):
    g = gw("--read-only")

    async def scenario():
        async with g.client(g.token("11"), mode="legacy") as c:
            assert c.protocol_version == "2025-11-25"
            listed = await c.list_tools()
            names = {t.name for t in listed.tools}
            # writes are hidden in a read-only session, reads are listed
            assert "filesystem__read_text_file" in names and "filesystem__write_file" not in names
            r = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert not r.is_error
            # a hidden name still goes through the decision engine and fires its trigger
            w = await c.call_tool(
                "filesystem__write_file", {"path": str(world.files / "y.txt"), "content": "y"}
            )
            assert w.is_error and "write_in_read_session" in text(w)

    run(scenario)
    assert not (world.files / "y.txt").exists()


def test_mirrored_header_that_disagrees_with_the_body_is_400(gw):
    g = gw("--read-only")
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "filesystem__write_file", "arguments": {}},
    }
    headers = {
        "Authorization": f"Bearer {g.token('11')}",
        "Accept": "application/json, text/event-stream",
        "Mcp-Method": "tools/list",
    }
    r = httpx2.post(g.url, json=body, headers=headers)
    assert r.status_code == 400 and "Mcp-Method" in r.json()["error"]["message"]
    headers["Mcp-Method"] = "tools/call"
    headers["Mcp-Name"] = "time__get_current_time"
    r = httpx2.post(g.url, json=body, headers=headers)
    assert r.status_code == 400 and "Mcp-Name" in r.json()["error"]["message"]


def test_revoked_client_is_a_kill_switch_and_recorded_events_still_arrive(gw, world, portal):
    g = gw("--read-only")

    async def before():
        async with g.client(g.token("11")) as c:
            for _ in range(3):
                assert not (await c.call_tool("time__get_current_time", {"timezone": "UTC"})).is_error

    run(before)
    assert portal.wait_for(lambda: sum(len(v) for v in portal.events.values()) >= 6)
    recorded = sum(len(v) for v in portal.events.values())
    portal.revoke()

    async def after():
        async with g.client(g.token("11")) as c:
            deadline = time.monotonic() + 10
            while True:
                r = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
                if r.is_error:
                    break
                assert time.monotonic() < deadline, "still forwarding after the revocation"
                await anyio.sleep(0.05)
            assert "kill switch" in text(r) and "revoked" in text(r)

    run(after)
    err = g.stop()
    spooled = sum(len(read_events(f)[0]) for f in world.spool.glob("*.jsonl"))
    assert sum(len(v) for v in portal.events.values()) == spooled >= recorded, err
    # restart with the revoked token and the cached bundle: refuses to start
    r = _run_to_exit(world.gateway_args("--read-only", portal=portal))
    assert r.returncode == 2 and b"revoked or wrong" in r.stderr
    assert (world.state / "bundle.jws").exists()


def _run_to_exit(args: list[str]) -> subprocess.CompletedProcess:
    """A gateway expected to refuse to start or to stop at its gate: it exits on its own (60 s: a bound)."""
    return subprocess.run([PY, *args], cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)


def test_start_refused_with_a_role_the_client_may_not_enforce(gw, world, portal):
    portal.client_roles = ["docs_agent"]
    r = _run_to_exit(world.gateway_args("--read-only", portal=portal))
    assert r.returncode == 2
    assert b"may not enforce role 'code_agent' (allowed: docs_agent)" in r.stderr
    assert portal.sessions == {}


def test_wrong_token_with_a_cached_bundle_refuses_to_start(gw, world, portal):
    g = gw("--read-only")
    g.stop()
    assert (world.state / "bundle.jws").exists()
    args = world.gateway_args("--read-only", portal=portal)
    args[args.index(TOKEN)] = "wrong-token"
    r = _run_to_exit(args)
    assert r.returncode == 2 and b"revoked or wrong" in r.stderr


def test_gate_refusal_is_a_refused_session_in_the_portal(world, portal):
    doc = base_doc(world)
    doc["roles"]["code_agent"]["forbidden_servers"] = ["time"]
    doc["roles"]["code_agent"]["allowed_servers"].remove("time")
    world.publish(portal, doc)
    world.write_config(("time",))
    r = _run_to_exit(world.gateway_args("--read-only", portal=portal))
    assert r.returncode == 3, r.stderr
    (refused,) = portal.sessions.values()
    assert refused["state"] == "refused" and refused["role"] == "code_agent"
    report = refused["gate_report"]
    assert [v["server"] for v in report["violations"]] == ["time"]
    assert "time" in report["report"]


def test_non_loopback_http_without_auth_refuses_to_start(world):
    world.write_bundle(world.doc())
    world.write_config(("time",))
    r = _run_to_exit(world.gateway_args("--http", f"0.0.0.0:{free_port()}"))
    assert r.returncode == 2 and b"without agent authentication" in r.stderr


def test_tool_added_at_run_time_is_hidden_refused_reported_then_approved(gw, world, portal):
    g = gw("--read-only")
    token = g.token("11")

    async def unknown():
        async with g.client(token) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert "late__hello" in names and "late__late_tool" not in names
            r = await c.call_tool("late__late_tool", {})
            assert r.is_error and "unknown_tool" in text(r)
            assert not (await c.call_tool("late__hello", {})).is_error  # not halted

    run(unknown)

    def reported() -> bool:
        return any(
            t["name"] == "late_tool"
            for rep in portal.tool_reports
            for srv in rep["servers"]
            if srv["server"] == "late"
            for t in srv["tools"]
        )

    assert portal.wait_for(reported)
    doc = base_doc(world, version=world.next_version())
    doc["servers"]["late"]["tools"]["late_tool"] = {"class": "read"}
    world.publish(portal, doc)

    async def approved():
        async with g.client(token) as c:
            deadline = time.monotonic() + 10
            while True:
                r = await c.call_tool("late__late_tool", {}, meta={"io.mcpgov/run": "after-approval"})
                if not r.is_error:
                    break
                assert time.monotonic() < deadline, text(r)
                await anyio.sleep(0.1)
            assert text(r) == "late_tool: hi"
            names = {t.name for t in (await c.list_tools(meta={"io.mcpgov/run": "after-approval"})).tools}
            assert "late__late_tool" in names

    run(approved)
    blocked = [
        event
        for f in world.spool.glob("*.jsonl")
        for _, event in read_events(f)[0]
        if event["trigger"] == "unknown_tool"
    ]
    assert blocked and all(e["tool"] == "late_tool" for e in blocked)
