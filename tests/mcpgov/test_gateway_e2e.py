"""End to end: an agent (the SDK's Client) talks to ``python -m mcpgov gateway`` over stdio; the gateway talks
to real upstream MCP servers (mcp-server-time, @modelcontextprotocol/server-filesystem, mcp-server-git).

Every refusal is checked on the upstream side too: the file a refused write_file would create is not on disk.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from mcp import Client

from mcpgov.bundle import tool_definition_hash
from tests.mcpgov.conftest import PY, ROOT, TIME_ARGS
from tests.mcpgov.helpers import iso

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("filesystem_server")]


def text(result) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


def run(scenario) -> None:
    anyio.run(scenario)


async def write(c: Client, path, content: str = "x"):
    return await c.call_tool("filesystem__write_file", {"path": str(path), "content": content})


async def wait_until(predicate, timeout: float = 5.0) -> float:
    """Poll an async predicate; return how long it took."""
    t0 = time.monotonic()
    while True:
        if await predicate():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached in time")
        await anyio.sleep(0.05)


# the stdio fast path (legacy handshake), the SDK path for the same stdio session, and a 2026-07-28 session
PATHS = [
    pytest.param(True, "legacy", id="fast-path"),
    pytest.param(False, "legacy", id="sdk-path"),
    pytest.param(True, "auto", id="protocol-2026"),
]


@pytest.mark.parametrize(("fast_path", "mode"), PATHS)
def test_allowed_calls_are_forwarded_and_audited(world, fast_path, mode):
    world.write_bundle(world.doc())
    world.write_config(("time", "filesystem"))

    async def scenario():
        async with Client(world.gateway("--read-write", fast_path=fast_path), mode=mode) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert {"time__get_current_time", "filesystem__write_file", "filesystem__read_text_file"} <= names
            r = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert not r.is_error and '"timezone": "UTC"' in text(r)
            r = await write(c, world.files / "a.txt", "hello")
            assert not r.is_error, text(r)
            r = await c.call_tool("filesystem__read_text_file", {"path": str(world.files / "a.txt")})
            assert text(r) == "hello"

    run(scenario)
    assert (world.files / "a.txt").read_text() == "hello"
    events = world.events()
    assert [(e["phase"], e["tool"], e["status"]) for e in events] == [
        ("intent", "get_current_time", None),
        ("result", "get_current_time", "success"),
        ("intent", "write_file", None),
        ("result", "write_file", "success"),
        ("intent", "read_text_file", None),
        ("result", "read_text_file", "success"),
    ]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[0]["call_id"] == events[1]["call_id"] and events[1]["bundle_version"] == 1
    log = next(world.spool.glob("*.log")).read_text().splitlines()
    audit = [line for line in log if line.startswith("MCP_AUDIT")]
    assert len(audit) == 3
    assert "| server=filesystem | tool=write_file | args={path: " in audit[1]
    assert audit[1].endswith("| status=success")
    assert "duration_ms=" in audit[1]


def test_git_upstream_read(world):
    subprocess.run(["git", "init", "-q", str(world.repo)], check=True)
    world.write_bundle(world.doc())
    world.write_config(("time", "git"))

    async def scenario():
        async with Client(world.gateway(), mode="legacy") as c:
            r = await c.call_tool("git__git_status", {"repo_path": str(world.repo)})
            assert not r.is_error and "branch" in text(r).lower()

    run(scenario)


@pytest.mark.parametrize(("fast_path", "mode"), PATHS)
def test_trigger_1_unauthorized_server(world, fast_path, mode):
    world.write_bundle(world.doc())
    world.write_config(("time", "filesystem"))

    async def scenario():
        async with Client(world.gateway("--read-write", fast_path=fast_path), mode=mode) as c:
            # a server the role may not use (and that is not even configured)
            r = await c.call_tool("shell__run", {"command": "rm -rf /"})
            assert r.is_error
            assert "MCP_KILL_SWITCH_TRIGGERED: unauthorized_server" in text(r)
            assert "not in the allowlist" in text(r) or "forbidden" in text(r)
            # halted: even an allowed call now waits for a person
            r = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert r.is_error and "halted by trigger unauthorized_server" in text(r)
            r = await write(c, world.files / "after-halt.txt")
            assert r.is_error

    run(scenario)
    assert not (world.files / "after-halt.txt").exists()
    results = [e for e in world.events() if e["phase"] == "result"]
    assert [(e["status"], e["trigger"]) for e in results] == [
        ("blocked", "unauthorized_server"),
        ("blocked", "session_halted"),
        ("blocked", "session_halted"),
    ]


def test_trigger_1_after_the_role_loses_a_server_mid_session(world):
    """A new bundle (re-signed file) takes filesystem away from the role: the next call is refused."""
    world.write_bundle(world.doc())
    world.write_config(("time", "filesystem"))

    async def scenario():
        async with Client(world.gateway("--read-write"), mode="legacy") as c:
            assert not (await write(c, world.files / "before.txt")).is_error
            doc = world.doc(version=world.next_version())
            doc["roles"]["code_agent"]["forbidden_servers"].append("filesystem")
            world.write_bundle(doc)

            async def hidden():
                return not any(t.name.startswith("filesystem__") for t in (await c.list_tools()).tools)

            assert await wait_until(hidden) < 2.0
            r = await write(c, world.files / "after.txt")
            assert r.is_error and "unauthorized_server" in text(r) and "forbidden for role" in text(r)

    run(scenario)
    assert (world.files / "before.txt").exists()
    assert not (world.files / "after.txt").exists()


@pytest.mark.parametrize(("fast_path", "mode"), PATHS)
def test_trigger_2_write_in_read_only_session(world, fast_path, mode):
    world.write_bundle(world.doc())
    world.write_config(("time", "filesystem"))

    async def scenario():
        async with Client(world.gateway("--read-only", fast_path=fast_path), mode=mode) as c:
            r = await c.call_tool("filesystem__list_directory", {"path": str(world.files)})
            assert not r.is_error
            r = await write(c, world.files / "nope.txt")
            assert r.is_error
            assert "MCP_KILL_SWITCH_TRIGGERED: write_in_read_session" in text(r)
            assert (
                "Last 3 calls:" in text(r)
                and "filesystem.list_directory" in text(r)
                and "→ success" in text(r)
            )

    run(scenario)
    assert not (world.files / "nope.txt").exists()


def test_trigger_3_production_grant_expires_during_the_session(world):
    """Production needs a live grant; when the grant's window closes, the next call is refused."""
    world.write_config(("time", "filesystem"))
    now = datetime.now(UTC)
    doc = world.doc()
    doc["environment"] = doc["environment_policy"]["name"] = "production"
    doc["environment_policy"].update(requires_authorization=True, forbidden_patterns=[])
    doc["grants"] = [
        {
            "id": "AR-7",
            "role": "code_agent",
            "servers": ["time", "filesystem"],
            "starts_at": iso(now - timedelta(minutes=5)),
            "ends_at": iso(now + timedelta(seconds=15)),
        }
    ]
    world.write_bundle(doc)

    async def scenario():
        async with Client(world.gateway("--read-write", env="production"), mode="legacy") as c:
            assert not (await write(c, world.files / "inside-window.txt")).is_error
            await anyio.sleep(max(0.0, (now + timedelta(seconds=15.2) - datetime.now(UTC)).total_seconds()))
            r = await write(c, world.files / "after-window.txt")
            assert r.is_error and "production_environment" in text(r)
            assert "no live production-access grant" in text(r)

    run(scenario)
    assert (world.files / "inside-window.txt").exists()
    assert not (world.files / "after-window.txt").exists()


def test_trigger_3_production_without_grant_refuses_to_start(world):
    world.write_config(("time",))
    doc = world.doc()
    doc["environment"] = doc["environment_policy"]["name"] = "production"
    doc["environment_policy"].update(requires_authorization=True, forbidden_patterns=[])
    world.write_bundle(doc)
    r = subprocess.run(
        [PY, *world.gateway_args(env="production")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 3
    assert "MCP environment gate FAILED" in r.stderr
    assert "time: environment 'production' requires explicit human authorization" in r.stderr
    assert r.stdout == ""


def test_trigger_4_rate_limit_pause_then_halt(world):
    doc = world.doc()
    doc["rate_limits"] = {
        "global": {"max_calls_per_session": 4, "pause_at_percent": 50},
        "per_server": {"filesystem": {"max_write_calls_per_session": 1}},
    }
    world.write_bundle(doc)
    world.write_config(("time", "filesystem"))
    target = world.files / "counter.txt"

    async def scenario():
        async with Client(world.gateway("--read-write"), mode="legacy") as c:
            assert not (await write(c, target, "first")).is_error
            assert not (await c.call_tool("time__get_current_time", {"timezone": "UTC"})).is_error
            r = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert r.is_error and text(r).startswith("MCP RATE LIMIT ALERT")
            assert "2/4 session calls (50%" in text(r) and "filesystem: 1 calls" in text(r)
            # paused: nothing runs until a person releases it (offline mode: nobody can)
            r = await write(c, target, "second")
            assert r.is_error and "paused" in text(r)

    run(scenario)
    assert target.read_text() == "first"


def test_trigger_4_per_server_write_limit_halts(world):
    doc = world.doc()
    doc["rate_limits"] = {"global": {}, "per_server": {"filesystem": {"max_write_calls_per_session": 2}}}
    world.write_bundle(doc)
    world.write_config(("time", "filesystem"))
    target = world.files / "counter.txt"

    async def scenario():
        async with Client(world.gateway("--read-write"), mode="legacy") as c:
            assert not (await write(c, target, "one")).is_error
            assert not (await write(c, target, "two")).is_error
            r = await write(c, target, "three")
            assert r.is_error and "MCP_KILL_SWITCH_TRIGGERED: rate_limit" in text(r)
            assert "2/2 write calls to filesystem" in text(r)

    run(scenario)
    assert target.read_text() == "two"


def test_trigger_5_large_undeclared_result_is_withheld(world):
    big = world.files / "big.txt"
    big.write_text("secret-ish line\n" * 100_000)  # 1.6 MB
    world.write_bundle(world.doc())
    world.write_config(("time", "filesystem"))

    async def scenario():
        async with Client(world.gateway(), mode="legacy") as c:
            r = await c.call_tool("filesystem__read_text_file", {"path": str(big)})
            assert r.is_error and "MCP_KILL_SWITCH_TRIGGERED: large_data_return" in text(r)
            assert "secret-ish line" not in text(r) and "withheld" in text(r)
            r = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert r.is_error and "halted by trigger large_data_return" in text(r)
        async with Client(world.gateway("--declare-large-data"), mode="legacy") as c:
            r = await c.call_tool("filesystem__read_text_file", {"path": str(big)})
            assert not r.is_error and len(text(r)) == 1_600_000

    run(scenario)
    withheld = [e for e in world.events() if e["phase"] == "result" and e["trigger"] == "large_data_return"]
    assert len(withheld) == 1 and withheld[0]["bytes"] == 1_600_000 and withheld[0]["status"] == "blocked"


def test_trigger_6_cascade_write_chain(world):
    world.write_bundle(world.doc())
    world.write_config(("time", "filesystem"))

    async def scenario():
        async with Client(world.gateway("--read-write"), mode="legacy") as c:
            assert not (await write(c, world.files / "a.txt")).is_error
            assert not (await write(c, world.files / "b.txt")).is_error
            r = await write(c, world.files / "c.txt", "third")
            assert r.is_error and "MCP_KILL_SWITCH_TRIGGERED: cascade_write_chain" in text(r)
            lines = text(r).splitlines()
            shown = [line for line in lines if line.startswith("  ") and "filesystem.write_file" in line]
            assert len(shown) == 2 and "a.txt" in shown[0] and "b.txt" in shown[1]

    run(scenario)
    assert (world.files / "a.txt").exists() and (world.files / "b.txt").exists()
    assert not (world.files / "c.txt").exists()


def test_kill_switch_flag_applies_within_a_second(world):
    world.write_bundle(world.doc())
    world.write_config(("time", "filesystem"))

    async def scenario():
        async with Client(world.gateway("--read-write"), mode="legacy") as c:
            assert not (await write(c, world.files / "before.txt")).is_error
            doc = world.doc(version=world.next_version())
            doc["flags"] = [
                {
                    "name": "mcp.filesystem.write",
                    "server": "filesystem",
                    "capability": "write",
                    "enabled": False,
                    "reason": "Production incident — filesystem write suspended",
                    "changed_at": "2026-11-24T16:42:00Z",
                }
            ]
            world.write_bundle(doc)
            await anyio.sleep(1.0)
            r = await write(c, world.files / "after.txt")
            assert r.is_error
            assert text(r).splitlines()[0] == (
                "MCP_KILL_SWITCH: mcp.filesystem.write disabled by governance flag — reason: Production incident "
                "— filesystem write suspended — since 2026-11-24T16:42:00Z"
            )

    run(scenario)
    assert not (world.files / "after.txt").exists()


def test_expired_bundle_fails_closed(world):
    now = datetime.now(UTC)
    world.write_bundle(
        world.doc(issued_at=iso(now - timedelta(days=2)), expires_at=iso(now - timedelta(days=1)))
    )
    world.write_config(("time", "filesystem"))

    async def scenario():
        async with Client(world.gateway("--read-write"), mode="legacy") as c:
            for call in (
                ("time__get_current_time", {"timezone": "UTC"}),
                ("filesystem__write_file", {"path": str(world.files / "x.txt"), "content": "x"}),
            ):
                r = await c.call_tool(*call)
                assert r.is_error and "expired" in text(r) and "fails closed" in text(r)

    run(scenario)
    assert not (world.files / "x.txt").exists()
    assert {e["trigger"] for e in world.events() if e["phase"] == "result"} == {"bundle_expired"}


def test_tampered_bundle_file_refuses_to_start(world):
    jws = world.write_bundle(world.doc())
    h, p, s = jws.split(".")
    world.bundle_path.write_text(f"{h}.{p[:-2]}{'A' if p[-2] != 'A' else 'B'}{p[-1]}.{s}")
    world.write_config(("time",))
    r = subprocess.run(
        [PY, *world.gateway_args()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 4
    assert "bundle rejected: bad_signature" in r.stderr


def test_changed_tool_definition_is_hidden_and_refused(world):
    async def live_hashes():
        from mcp import StdioServerParameters

        async with Client(StdioServerParameters(command=PY, args=TIME_ARGS), mode="legacy") as d:
            return {
                t.name: tool_definition_hash(t.name, t.description, t.input_schema)
                for t in (await d.list_tools()).tools
            }

    hashes = anyio.run(live_hashes)
    doc = world.doc()
    doc["servers"]["time"]["tools"]["get_current_time"]["definition_hash"] = hashes["get_current_time"]
    doc["servers"]["time"]["tools"]["convert_time"]["definition_hash"] = "0" * 64  # approved something else
    world.write_bundle(doc)
    world.write_config(("time",))

    async def scenario():
        async with Client(world.gateway(), mode="legacy") as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert "time__get_current_time" in names and "time__convert_time" not in names
            r = await c.call_tool(
                "time__convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "UTC"}
            )
            assert r.is_error and "tool_definition_changed" in text(r)

    run(scenario)
    reported = [
        e for e in world.events() if e["trigger"] == "tool_definition_changed" and e["phase"] == "result"
    ]
    assert reported and reported[0]["tool"] == "convert_time"


def test_gateway_refuses_to_start_with_a_forbidden_server_configured(world):
    world.write_bundle(world.doc())
    world.write_config(
        ("time",),
        extra={"shell": {"command": "sh", "args": []}, "git": {"url": "http://db.prod.internal/mcp"}},
    )
    r = subprocess.run(
        [PY, *world.gateway_args()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 3
    assert "✗ shell: server 'shell' is forbidden for role 'code_agent'" in r.stderr
    assert "✗ git:" in r.stderr and "✓ time" in r.stderr


def _gate(world, *args):
    return subprocess.run(
        [
            PY,
            "-m",
            "mcpgov",
            "gate",
            "--keys",
            str(world.keys),
            "--bundle-file",
            str(world.bundle_path),
            "--state-dir",
            str(world.state),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_gate_cli(world):
    world.write_bundle(world.doc())
    ok = world.write_config(("time", "filesystem"))
    r = _gate(world, "--env", "development", "--role", "code_agent", "--config", str(ok))
    assert r.returncode == 0, r.stderr
    assert (
        "MCP environment gate passed: environment=development, role=code_agent, servers=[filesystem, time]"
        in r.stderr
    )

    bad = world.base / "bad.mcp.json"
    bad.write_text(json.dumps({"mcpServers": {"time": {"command": "x"}, "shell": {"command": "bash"}}}))
    r = _gate(world, "--env", "development", "--role", "code_agent", "--config", str(bad))
    assert r.returncode == 1
    assert "✗ shell: server 'shell' is forbidden for role 'code_agent'" in r.stderr and "✓ time" in r.stderr

    seed = world.base / "mcp-config.yaml"
    seed.write_text(
        "environments:\n"
        "  development:\n"
        "    allowed_servers:\n"
        "      - name: filesystem\n"
        f"        path: {world.files}\n"
        "        permissions: read_write\n"
        "      - name: time\n"
        "        url: https://time.prod.example.com/mcp\n"
        "        permissions: read_only\n"
        "    forbidden_patterns: ['*staging*']\n"
    )
    r = _gate(world, "--env", "development", "--role", "code_agent", "--config", str(seed))
    assert r.returncode == 1
    assert (
        "time: configured target 'https://time.prod.example.com/mcp' matches forbidden pattern '*prod*'"
        in r.stderr
    )
    assert "✓ filesystem" in r.stderr


def test_http_transport(world):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    world.write_bundle(world.doc())
    world.write_config(("time", "filesystem"))
    proc = subprocess.Popen(
        [PY, *world.gateway_args("--read-only", "--http", f"127.0.0.1:{port}")],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.1)

        async def scenario():
            async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy") as c:
                r = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
                assert not r.is_error
                r = await write(c, world.files / "http.txt")
                assert r.is_error and "write_in_read_session" in text(r)

        run(scenario)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert not (world.files / "http.txt").exists()


def test_no_stdout_noise_besides_the_wire(world):
    """stdout is the JSON-RPC wire: every line the gateway writes there is a JSON-RPC message."""
    world.write_bundle(world.doc())
    world.write_config(("time",))
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"},
        },
    }
    msgs = [
        init,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}},
        },
    ]
    proc = subprocess.Popen(
        [PY, *world.gateway_args()],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out_lines = []
    try:
        for m in msgs:
            proc.stdin.write(json.dumps(m) + "\n")
            proc.stdin.flush()
            if "id" in m:
                out_lines.append(proc.stdout.readline())
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)
    parsed = [json.loads(line) for line in out_lines]
    assert [p["id"] for p in parsed] == [1, 2]
    assert parsed[1]["result"]["isError"] is False
    assert proc.stdout.read() == ""


def test_failed_upstream_call_is_recorded_once_and_not_retried(world):
    world.write_bundle(world.doc())
    world.write_config(("time", "filesystem"))

    async def scenario():
        async with Client(world.gateway(), mode="legacy") as c:
            r = await c.call_tool("filesystem__read_text_file", {"path": str(world.files / "missing.txt")})
            assert r.is_error and ("ENOENT" in text(r) or "no such file" in text(r).lower())
            r = await c.call_tool("time__get_current_time", {"timezone": "Not/AZone"})
            assert r.is_error

    run(scenario)
    events = world.events()
    assert [(e["phase"], e["tool"], e["status"]) for e in events] == [
        ("intent", "read_text_file", None),
        ("result", "read_text_file", "fail"),
        ("intent", "get_current_time", None),
        ("result", "get_current_time", "fail"),
    ]
