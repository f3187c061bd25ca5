"""The two bypasses of the SDK behave like the SDK paths they mirror.

- The stdio fast path (``mcpgov/fast_stdio.py``): the same scripted JSON-RPC conversation against
  ``python -m mcpgov gateway`` with ``MCPGOV_FAST_PATH=1`` and ``=0`` gives the same answers (results,
  refusals, JSON-RPC errors) and the same audit events, and only the first run took the fast path.
- The raw upstream channel (``mcpgov/upstream.py``): one stdio upstream asked the same calls through the
  raw channel and through the SDK ``ClientSession`` gives the same results and errors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest

from mcpgov.config import UpstreamConfig
from mcpgov.upstream import Upstream, UpstreamError, UpstreamTimeout
from tests.mcpgov.conftest import FILESYSTEM_SERVER, PY, ROOT, TIME_ARGS, World

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("filesystem_server")]

ISO_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    },
}


def call(name: str, **arguments: Any) -> tuple[str, dict[str, Any]]:
    return name, arguments


def converse(
    world: World, calls: list[tuple[str, dict[str, Any]]], *, fast: bool, scope: str
) -> tuple[list, str]:
    """Send ``calls`` one at a time (each waits for its answer); return the answers and the gateway's stderr."""
    env = {**os.environ, "MCPGOV_LOG_LEVEL": "DEBUG", "MCPGOV_FAST_PATH": "1" if fast else "0"}
    errlog = world.base / f"stderr-{fast}.log"
    with open(errlog, "w") as err:
        proc = subprocess.Popen(
            [PY, *world.gateway_args(scope)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        watchdog = threading.Timer(180, proc.kill)
        watchdog.start()
        try:

            def send(msg: dict[str, Any]) -> None:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(msg) + "\n")
                proc.stdin.flush()

            def answer(rid: int) -> dict[str, Any]:
                assert proc.stdout is not None
                while True:
                    line = proc.stdout.readline()
                    assert line, "the gateway closed its stdout"
                    msg = json.loads(line)
                    if msg.get("id") == rid:
                        return msg

            send(INIT)
            answer(0)
            send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            answers = []
            for i, (name, arguments) in enumerate(calls, 1):
                send(
                    {
                        "jsonrpc": "2.0",
                        "id": i,
                        "method": "tools/call",
                        "params": {"name": name, "arguments": arguments},
                    }
                )
                msg = answer(i)
                if "result" in msg:
                    # what an SDK client sees of the result
                    result = types.CallToolResult.model_validate(msg["result"])
                    answers.append(
                        ("result", result.model_dump(by_alias=True, mode="json", exclude_none=True))
                    )
                else:
                    answers.append(("error", {k: msg["error"].get(k) for k in ("code", "message")}))
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=60)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
    return answers, errlog.read_text()


def audit_events(world: World) -> list[dict[str, Any]]:
    keep = (
        "seq",
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
    return [{k: e[k] for k in keep} for e in world.events()]


def normalized(world: World, data: Any) -> Any:
    text = json.dumps(data, sort_keys=True, ensure_ascii=False)
    return json.loads(ISO_TS.sub("<ts>", text.replace(str(world.base), "<base>")))


def run_both(calls: list[tuple[str, dict[str, Any]]], scope: str, setup=None) -> dict[bool, tuple]:
    out = {}
    for fast in (True, False):
        world = World(Path(tempfile.mkdtemp(prefix="mcpgov-e2e-")))
        try:
            world.write_bundle(world.doc())
            world.write_config(("time", "filesystem"))
            (world.files / "existing.txt").write_text("hello")
            resolved = [(n, {k: v.format(files=world.files) for k, v in a.items()}) for n, a in calls]
            answers, stderr = converse(world, resolved, fast=fast, scope=scope)
            out[fast] = (normalized(world, answers), normalized(world, audit_events(world)), stderr)
        finally:
            shutil.rmtree(world.base, ignore_errors=True)
    return out


READ_WRITE = [
    call("time__get_current_time", timezone="UTC"),
    call("filesystem__read_text_file", path="{files}/existing.txt"),
    call("filesystem__write_file", path="{files}/a.txt", content="one"),
    call("filesystem__read_text_file", path="{files}/missing.txt"),  # the upstream's isError result
    call("time__get_current_time", timezone="Not/AZone"),
    call("no_separator_here"),  # the gateway's JSON-RPC error
    call("filesystem__no_such_tool", path="{files}/x"),  # unknown tool: refused (unknown_tool), not halting
    call("filesystem__write_file", path="{files}/b.txt", content="two"),
    call("filesystem__write_file", path="{files}/c.txt", content="three"),
    call("filesystem__write_file", path="{files}/d.txt", content="four"),  # cascade write chain
    call("time__get_current_time", timezone="UTC"),  # halted
]
READ_ONLY = [
    call("time__get_current_time", timezone="UTC"),
    call("filesystem__write_file", path="{files}/a.txt", content="one"),  # write in a read-only session
    call("filesystem__read_text_file", path="{files}/existing.txt"),  # halted
]
UNAUTHORIZED = [
    call("shell__run", command="true"),  # unauthorized server
    call("filesystem__read_text_file", path="{files}/existing.txt"),  # halted
]


@pytest.mark.parametrize(
    ("calls", "scope", "triggers"),
    [
        pytest.param(
            READ_WRITE,
            "--read-write",
            ["unknown_tool", "cascade_write_chain", "session_halted"],
            id="read-write",
        ),
        pytest.param(READ_ONLY, "--read-only", ["write_in_read_session", "session_halted"], id="read-only"),
        pytest.param(
            UNAUTHORIZED, "--read-write", ["unauthorized_server", "session_halted"], id="unauthorized"
        ),
    ],
)
def test_fast_path_answers_and_audits_like_the_sdk_path(calls, scope, triggers):
    runs = run_both(calls, scope)
    (fast_answers, fast_events, fast_log), (sdk_answers, sdk_events, sdk_log) = runs[True], runs[False]
    # the fast path was taken for every call in the first run, never in the second
    assert fast_log.count("fast path: tools/call") == len(calls)
    assert "fast path: tools/call" not in sdk_log
    assert fast_answers == sdk_answers
    assert fast_events == sdk_events
    # and the conversation exercised what it claims to: refusals with their triggers, errors, results
    assert len(fast_answers) == len(calls)
    blocked = [e["trigger"] for e in fast_events if e["status"] == "blocked"]
    assert blocked == triggers
    if scope == "--read-write" and len(calls) > 5:
        assert fast_answers[5] == [
            "error",
            {"code": types.INVALID_PARAMS, "message": fast_answers[5][1]["message"]},
        ]
        assert fast_answers[3][1]["isError"] is True and fast_answers[0][1]["isError"] is False


async def _both_channels(up: Upstream, tool: str, arguments: dict[str, Any] | None, timeout: float = 30.0):
    """The same call through the raw channel and through the SDK session."""
    out = []
    for raw in (up.raw, None):
        saved = up.raw
        up.raw = raw
        try:
            result = await up.call_raw(tool, arguments, timeout)
            # the raw channel hands over the upstream's dict as sent; the SDK fills in defaults (isError: false)
            result = types.CallToolResult.model_validate(result).model_dump(by_alias=True, mode="json")
            out.append(("result", result))
        except UpstreamError as exc:
            out.append(("error", exc.code))
        except UpstreamTimeout as exc:
            out.append(("timeout", str(exc)))
        finally:
            up.raw = saved
    return out


def test_raw_upstream_channel_answers_like_the_sdk_session():
    base = Path(tempfile.mkdtemp(prefix="mcpgov-e2e-"))
    (base / "hello.txt").write_text("hello")
    results = {}

    async def scenario():
        fs = Upstream(
            UpstreamConfig(slug="filesystem", command=str(FILESYSTEM_SERVER), args=(str(base),)), "legacy"
        )
        tm = Upstream(UpstreamConfig(slug="time", command=PY, args=tuple(TIME_ARGS)), "legacy")
        async with anyio.create_task_group() as tg:
            await tg.start(fs.run)
            await tg.start(tm.run)
            assert fs.raw is not None and tm.raw is not None, (fs.last_error, tm.last_error)
            results["read"] = await _both_channels(fs, "read_text_file", {"path": str(base / "hello.txt")})
            results["missing"] = await _both_channels(fs, "read_text_file", {"path": str(base / "nope.txt")})
            results["unknown"] = await _both_channels(fs, "no_such_tool", {})
            results["bad_args"] = await _both_channels(tm, "get_current_time", None)
            results["listing"] = await _both_channels(fs, "list_directory", {"path": str(base)})
            tg.cancel_scope.cancel()

    try:
        anyio.run(scenario)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for name, (raw, sdk) in results.items():
        assert raw == sdk, name
    assert results["read"][0][1]["content"][0]["text"] == "hello"
    assert results["missing"][0][1]["isError"] is True
