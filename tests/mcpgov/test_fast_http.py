"""The streamable HTTP fast path (``mcpgov/fast_http.py``) behaves like the SDK path it bypasses.

The same raw HTTP conversation (a legacy 2025-11-25 session with an agent token, then calls that
succeed, fail upstream, are refused and halt the session, then requests the SDK must refuse) against
the real gateway process with ``MCPGOV_FAST_PATH=1`` and ``=0``: the same answers, the same refusals
(status, challenge, JSON-RPC error) and the same audit events; only the first run took the fast path.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
import jwt
import mcp_types as types
import pytest

from tests.mcpgov.conftest import World
from tests.mcpgov.portal_double import PortalTestDouble
from tests.mcpgov.test_fast_path import ISO_TS, audit_events
from tests.mcpgov.test_gateway_identity import AGENTS, Http, base_doc

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("filesystem_server")]

VERSION = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
CALLS = [
    ("time__get_current_time", {"timezone": "UTC"}),
    ("filesystem__read_text_file", {"path": "{files}/existing.txt"}),
    ("filesystem__write_file", {"path": "{files}/a.txt", "content": "one"}),
    ("filesystem__read_text_file", {"path": "{files}/missing.txt"}),  # the upstream's isError result
    ("no_separator_here", {}),  # the gateway's JSON-RPC error
    ("filesystem__no_such_tool", {"path": "{files}/x"}),  # unknown tool: refused, not halting
    ("filesystem__write_file", {"path": "{files}/b.txt", "content": "two"}),
    ("filesystem__write_file", {"path": "{files}/c.txt", "content": "three"}),
    ("filesystem__write_file", {"path": "{files}/d.txt", "content": "four"}),  # cascade write chain
    ("time__get_current_time", {"timezone": "UTC"}),  # halted
]


def message(r: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC answer of a POST, whether the server answered JSON or an SSE stream."""
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in r.text.splitlines() if line.startswith("data:")]
        msgs = [json.loads(d) for d in data if d]
        return next(m for m in msgs if "id" in m and ("result" in m or "error" in m))
    return r.json()


def answer(msg: dict[str, Any]) -> tuple:
    if "result" in msg:
        result = types.CallToolResult.model_validate(msg["result"])
        dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        run = dumped.get("_meta", {}).get("io.mcpgov/run")
        assert run, "every HTTP answer names the governance run"
        dumped["_meta"]["io.mcpgov/run"] = "<run>"
        return ("result", dumped)
    return ("error", msg["error"]["code"], msg["error"]["message"])


def refusal(r: httpx2.Response) -> tuple:
    """What a client sees of a refused request (the session id, random, left out)."""
    body = r.text
    return (r.status_code, r.headers.get("www-authenticate"), r.headers.get("content-type"), body)


def open_session(
    http: httpx2.Client, url: str, token: str, capabilities: dict[str, Any] | None = None
) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "Accept": ACCEPT, "Content-Type": "application/json"}
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": VERSION,
            "capabilities": capabilities or {},
            "clientInfo": {"name": "t", "version": "0"},
        },
    }
    r = http.post(url, json=init, headers=headers)
    assert r.status_code == 200, r.text
    headers["Mcp-Session-Id"] = r.headers["mcp-session-id"]
    headers["Mcp-Protocol-Version"] = VERSION
    r = http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    assert r.status_code == 202
    return headers


def tools_call(rid: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


def converse(g: Http, world: World) -> dict[str, Any]:
    out: dict[str, Any] = {"answers": [], "refusals": {}}
    files = str(world.files)
    with httpx2.Client(timeout=60) as http:
        headers = open_session(http, g.url, g.token("11"))
        for i, (name, arguments) in enumerate(CALLS, 1):
            args = {k: v.format(files=files) for k, v in arguments.items()}
            r = http.post(g.url, json=tools_call(i, name, args), headers=headers)
            assert r.status_code == 200, r.text
            out["answers"].append(answer(message(r)))
        body = tools_call(99, "time__get_current_time", {"timezone": "UTC"})
        cases = {
            "no token": {k: v for k, v in headers.items() if k != "Authorization"},
            "garbage token": {**headers, "Authorization": "Bearer not-a-token"},
            "expired token": {
                **headers,
                "Authorization": f"Bearer {g.token('11', exp=int(time.time()) - 3600)}",
            },
            "another agent's token on this session": {**headers, "Authorization": f"Bearer {g.token('22')}"},
            "unknown session": {**headers, "Mcp-Session-Id": "0" * 32},
            "accepts JSON only": {**headers, "Accept": "application/json"},
            "wrong host": {**headers, "Host": "evil.example:80"},
        }
        for what, h in cases.items():
            out["refusals"][what] = refusal(http.post(g.url, json=body, headers=h))
        r = http.post(g.url, content=json.dumps(body), headers={**headers, "Content-Type": "text/plain"})
        out["refusals"]["not JSON"] = refusal(r)
        # bodies Python's json module reads but the SDK's parser refuses: the fast path reads them as the SDK
        for what, raw in {
            "UTF-8 BOM": b"\xef\xbb\xbf" + json.dumps(body).encode(),
            "lone surrogate": json.dumps(
                tools_call(98, "time__get_current_time", {"timezone": "\ud800"})
            ).encode(),
        }.items():
            out["refusals"][what] = refusal(http.post(g.url, content=raw, headers=headers))
        # an agent whose credential does not allow this gateway's role: its own session, refused call
        other = open_session(http, g.url, g.token("22"))
        out["answers"].append(answer(message(http.post(g.url, json=body, headers=other))))
    return out


def normalized(world: World, data: Any) -> Any:
    text = json.dumps(data, sort_keys=True, ensure_ascii=False)
    text = re.sub(r"127\.0\.0\.1:\d+", "<gateway>", text.replace(str(world.base), "<base>"))
    return json.loads(ISO_TS.sub("<ts>", text))


def asking_nothing(doc: dict) -> dict:
    """Servers that may ask the agent nothing mid-call: the plain fast path (the others take the
    streaming one, ``mcpgov/fast_http_stream.py``, tested in ``test_fast_http_stream.py``)."""
    for spec in doc["servers"].values():
        spec["server_requests"] = {"sampling": False, "elicitation": False, "roots": False}
    return doc


def test_http_fast_path_answers_refuses_and_audits_like_the_sdk_path(monkeypatch):
    runs = {}
    for fast in (True, False):
        portal = PortalTestDouble().start()
        monkeypatch.setenv("MCPGOV_FAST_PATH", "1" if fast else "0")
        monkeypatch.setenv("MCPGOV_LOG_LEVEL", "DEBUG")
        world = World(Path(tempfile.mkdtemp(prefix="mcpgov-e2e-")))
        try:
            world.publish(portal, asking_nothing(base_doc(world)))
            world.write_config(("time", "filesystem"))
            (world.files / "existing.txt").write_text("hello")
            g = Http(world, portal, "--read-write")
            try:
                result = converse(g, world)
            finally:
                log = g.stop()
            runs[fast] = (normalized(world, result), normalized(world, audit_events(world)), log)
        finally:
            portal.stop()
            shutil.rmtree(world.base, ignore_errors=True)
    (fast, fast_events, fast_log), (sdk, sdk_events, sdk_log) = runs[True], runs[False]
    # every plain call of the agent's own session took the fast path in the first run, none in the second
    assert fast_log.count("HTTP fast path: tools/call") == len(CALLS)
    assert "HTTP fast path" not in sdk_log
    assert fast["answers"] == sdk["answers"]
    assert fast["refusals"] == sdk["refusals"]
    assert fast_events == sdk_events
    # and the conversation exercised what it claims to
    answers = fast["answers"]
    assert answers[0][0] == "result" and answers[0][1]["isError"] is False
    assert answers[3][1]["isError"] is True  # the upstream's own error result
    assert answers[4] == ["error", types.INVALID_PARAMS, answers[4][2]]
    assert answers[-1][:2] == ["error", -32003] and "role" in answers[-1][2]
    blocked = [e["trigger"] for e in fast_events if e["status"] == "blocked"]
    assert blocked == ["unknown_tool", "cascade_write_chain", "session_halted"]
    refusals = fast["refusals"]
    assert {what: status for what, (status, *_) in refusals.items()} == {
        "no token": 401,
        "garbage token": 401,
        "expired token": 401,
        "another agent's token on this session": 404,
        "unknown session": 404,
        "accepts JSON only": 406,
        "wrong host": 421,
        "not JSON": 400,
        "UTF-8 BOM": 400,
        "lone surrogate": 400,
    }
    assert refusals["no token"][1].startswith("Bearer")


def test_a_call_to_a_server_that_may_ask_the_agent_but_does_not_is_answered_json(monkeypatch, world, portal):
    # the default policy lets a server elicit: the call takes the streaming fast path, which holds its
    # headers until the result and, the server having asked nothing, answers it as plain JSON
    monkeypatch.setenv("MCPGOV_FAST_PATH", "1")
    monkeypatch.setenv("MCPGOV_LOG_LEVEL", "DEBUG")
    world.publish(portal, base_doc(world))
    world.write_config(("time",))
    g = Http(world, portal, "--read-write")
    try:
        with httpx2.Client(timeout=30) as http:
            headers = open_session(http, g.url, g.token())
            # the 202 of notifications/initialized comes before its handler ran; a ping comes after it
            ping = http.post(g.url, json={"jsonrpc": "2.0", "id": "p", "method": "ping"}, headers=headers)
            assert ping.status_code == 200
            r = http.post(
                g.url, json=tools_call(1, "time__get_current_time", {"timezone": "UTC"}), headers=headers
            )
            assert r.status_code == 200 and "result" in r.json(), r.text
            assert r.headers["content-type"] == "application/json"
    finally:
        log = g.stop()
    assert "HTTP fast path: tools/call" in log
    assert "HTTP fast path: streaming" not in log


def _enforcing(g: Http, version: int) -> None:
    """Wait (generously) until the gateway says it enforces bundle ``version``."""
    deadline = time.monotonic() + 60
    while f"now enforcing bundle v{version}" not in g.stderr.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the gateway never took the new bundle"
        time.sleep(0.05)


def test_a_remembered_token_is_refused_on_the_fast_path_right_after_revocation_or_expiry(
    monkeypatch, world, portal
):
    """A token verified once is remembered (``AgentVerifier``); the bundle that revokes it, or its
    expiry, refuses the very next call on the fast path, with the SDK's 401."""
    monkeypatch.setenv("MCPGOV_LOG_LEVEL", "DEBUG")
    world.publish(portal, asking_nothing(base_doc(world)))
    world.write_config(("time", "filesystem"))
    g = Http(world, portal, "--read-only")
    call = tools_call(1, "time__get_current_time", {"timezone": "UTC"})
    try:
        with httpx2.Client(timeout=60) as http:
            token = g.token("11")
            headers = open_session(http, g.url, token)
            for _ in range(3):  # verified once, then answered from memory
                assert http.post(g.url, json=call, headers=headers).status_code == 200
            # a token that expires in two seconds, on its own session, verified and remembered too
            short = g.token("11", exp=int(time.time()) + 2)
            short_headers = open_session(http, g.url, short)
            assert http.post(g.url, json=call, headers=short_headers).status_code == 200
            jti = jwt.decode(token, options={"verify_signature": False})["jti"]
            version = world.next_version()
            revoking = [dict(AGENTS[0], revoked_jti=[jti]), AGENTS[1]]
            world.publish(portal, asking_nothing(base_doc(world, version=version, agents=revoking)))
            _enforcing(g, version)
            r = http.post(g.url, json=call, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            time.sleep(
                max(
                    0.0,
                    int(jwt.decode(short, options={"verify_signature": False})["exp"]) + 1.1 - time.time(),
                )
            )
            r = http.post(g.url, json=call, headers=short_headers)
            assert r.status_code == 401
            # another token of the same agent, not revoked, still works on a session of its own
            fresh = open_session(http, g.url, g.token("11"))
            assert http.post(g.url, json=call, headers=fresh).status_code == 200
    finally:
        log = g.stop()
    assert log.count("HTTP fast path: tools/call") == 5  # the refusals were the SDK's, nothing else
