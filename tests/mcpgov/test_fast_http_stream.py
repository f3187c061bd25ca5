"""The HTTP fast path for servers that may ask the agent something (``mcpgov/fast_http_stream.py``).

The same conversations run against the real gateway process (HTTP with agent tokens, the portal
double) with ``MCPGOV_FAST_PATH=1`` and ``=0``: the official SDK client with sampling, elicitation,
roots and logging callbacks calls an SDK upstream (``surface_server.py``) and npm
``@modelcontextprotocol/server-everything`` — allowed sampling capped to ``maxTokens``, denied sampling,
form elicitation, URL elicitation to an allowlisted and to another domain, roots, a log message, a call
that asks nothing — and must see the same results and be asked the same questions, with the same audit
events. Then the attacks on the reserved id of a pending request (another session, another agent's
token, an id never sent, a replayed answer) get the SDK path's answers and never reach the upstream,
and an agent that disconnects mid-stream leaves no request hanging.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.mcpgov.conftest import PY, World
from tests.mcpgov.portal_double import PortalTestDouble
from tests.mcpgov.test_fast_http import ACCEPT, normalized, open_session, tools_call
from tests.mcpgov.test_fast_path import INIT, audit_events
from tests.mcpgov.test_gateway_identity import Http, base_doc
from tests.mcpgov.test_surface_e2e import EVERYTHING, SURFACE

pytestmark = pytest.mark.slow

WAIT = 60  # generous bound for "it happens" on a loaded machine; never asserted as a duration
STREAMED = "HTTP fast path: streaming tools/call"
SAMPLING = {"sampling": {}}  # what a raw client declares at initialize to be asked to sample


def asking_world(world: World, portal: PortalTestDouble) -> None:
    """``surface`` may sample (capped at 100 tokens) and list roots; ``everything`` may elicit (form, and
    URLs on example.com) but not sample."""
    doc = base_doc(world)
    markers = world.base / "markers"
    markers.mkdir(exist_ok=True)
    doc["servers"]["surface"] = {
        "category": "other",
        "transport": "stdio",
        "command": PY,
        "args": [str(SURFACE)],
        "tools": {
            n: {"class": "read"}
            for n in ("hello", "ask_model", "log_something", "my_roots", "ask_model_later", "sleep")
        },
        "server_requests": {"sampling": True, "sampling_max_tokens": 100, "roots": True},
    }
    doc["servers"]["everything"] = {
        "category": "other",
        "transport": "stdio",
        "command": str(EVERYTHING),
        "args": ["stdio"],
        "tools": {
            n: {"class": "read"}
            for n in ("trigger-sampling-request", "trigger-elicitation-request", "trigger-url-elicitation")
        },
        "server_requests": {"sampling": False, "elicitation_url_domains": ["example.com"]},
    }
    for slug in ("surface", "everything"):
        doc["environment_policy"]["bindings"][slug] = {"target": "local", "permission": "read_only"}
        doc["roles"]["code_agent"]["allowed_servers"].append(slug)
    world.publish(portal, doc)
    world.write_config(
        ("time",),
        extra={
            "surface": {"command": PY, "args": [str(SURFACE)], "env": {"SURFACE_MARKERS": str(markers)}},
            "everything": {"command": str(EVERYTHING), "args": ["stdio"]},
        },
    )


CALLS = [
    ("surface__ask_model", {"n": 500}),  # allowed sampling, maxTokens capped to 100
    ("surface__ask_model", {"n": 7}),  # the agent answers the request with a JSON-RPC error
    ("everything__trigger-sampling-request", {"prompt": "2+2?", "maxTokens": 50}),  # sampling denied
    ("everything__trigger-elicitation-request", {}),  # form elicitation, accepted
    ("everything__trigger-url-elicitation", {"url": "https://login.example.com/consent"}),  # allowlisted
    ("everything__trigger-url-elicitation", {"url": "https://evil.example.net/x"}),  # refused, never shown
    ("surface__my_roots", {}),
    ("surface__log_something", {}),  # a log message of the call rides its stream
    ("surface__hello", {}),  # asks nothing: a plain JSON answer
]


async def sdk_conversation(g: Http) -> dict[str, Any]:
    asked: list[tuple[str, Any]] = []
    logs: list[Any] = []

    async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> Any:
        asked.append(("sampling", params.model_dump(mode="json", exclude_none=True)))
        if params.max_tokens == 7:
            return types.ErrorData(code=-1, message="the user said no")
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(text="4"), model="agent-model"
        )

    async def elicitation(ctx: Any, params: Any) -> types.ElicitResult:
        asked.append(("elicitation", params.model_dump(mode="json", exclude_none=True)))
        if getattr(params, "url", None):
            return types.ElicitResult(action="decline")
        return types.ElicitResult(
            action="accept", content={"name": "Ada", "check": True, "email": "a@b.example"}
        )

    async def roots(ctx: Any) -> types.ListRootsResult:
        asked.append(("roots", None))
        return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])

    async def logging(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.model_dump(mode="json", exclude_none=True))

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {g.token('11')}"}, timeout=WAIT)
    answers = []
    async with Client(
        streamable_http_client(g.url, http_client=http),
        mode="legacy",
        sampling_callback=sampling,
        elicitation_callback=elicitation,
        list_roots_callback=roots,
        logging_callback=logging,
    ) as c:
        await c.send_ping()  # after notifications/initialized has been handled (see agent_session)
        for name, arguments in CALLS:
            result = await c.call_tool(name, arguments)
            dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
            assert dumped["_meta"].pop("io.mcpgov/run")
            answers.append((name, dumped))
    return {"answers": answers, "asked": asked, "logs": logs}


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def uuids_out(data: Any) -> Any:
    """Random ids an upstream minted (server-everything's elicitation ids) left out of the comparison."""
    return json.loads(UUID.sub("<uuid>", json.dumps(data, sort_keys=True, ensure_ascii=False)))


EVERYTHING_ROOTS_SYNC = "REFUSED roots/list from everything: no agent session to ask"


def settled(g: Http) -> None:
    """Wait for server-everything's own roots sync (a timer 350 ms after it was initialized): refused, no
    agent being served yet. Otherwise it lands in one of the conversation's calls or not, as timing has it,
    and the fast and SDK runs would be asked different things."""
    deadline = time.monotonic() + WAIT
    while EVERYTHING_ROOTS_SYNC not in g.stderr.read_text(errors="replace"):
        assert time.monotonic() < deadline, g.stderr.read_text(errors="replace")[-3000:]
        time.sleep(0.05)


def run_both(body) -> dict[bool, tuple[Any, Any, str]]:
    """``body(g, world)`` against a fresh gateway on the fast path and on the SDK path."""
    runs = {}
    for fast in (True, False):
        portal = PortalTestDouble().start()
        world = World(Path(tempfile.mkdtemp(prefix="mcpgov-e2e-")))
        mp = pytest.MonkeyPatch()
        mp.setenv("MCPGOV_FAST_PATH", "1" if fast else "0")
        mp.setenv("MCPGOV_LOG_LEVEL", "DEBUG")
        try:
            asking_world(world, portal)
            g = Http(world, portal, "--read-only")
            try:
                settled(g)
                seen = body(g, world)
            finally:
                log = g.stop()
            runs[fast] = (
                uuids_out(normalized(world, seen)),
                uuids_out(normalized(world, audit_events(world))),
                log,
            )
        finally:
            mp.undo()
            portal.stop()
            shutil.rmtree(world.base, ignore_errors=True)
    return runs


def test_asking_servers_answer_ask_refuse_and_audit_alike_on_the_fast_and_the_sdk_path():
    if not EVERYTHING.exists():
        pytest.fail(f"{EVERYTHING} is missing: run `npm install`")
    runs = run_both(lambda g, world: anyio.run(sdk_conversation, g))
    (fast, fast_events, fast_log), (sdk, sdk_events, sdk_log) = runs[True], runs[False]
    # every call took the fast path in the first run; the six that put something to the agent streamed
    # (a refused request never reaches it: the denied sampling and the other domain's URL answered JSON)
    assert fast_log.count("HTTP fast path: tools/call") == len(CALLS), fast_log[-3000:]
    assert fast_log.count(STREAMED) == 6
    assert "HTTP fast path" not in sdk_log
    assert fast == sdk
    assert fast_events == sdk_events
    # and the conversation exercised what it claims to
    answers = [answer for _, answer in fast["answers"]]
    assert answers[0]["content"][0]["text"] == "model said: 4 (model=agent-model)"
    assert answers[1]["content"][0]["text"] == "sampling refused: the user said no"
    kinds = [kind for kind, _ in fast["asked"]]
    assert kinds == ["sampling", "sampling", "elicitation", "elicitation", "roots"]
    assert fast["asked"][0][1]["max_tokens"] == 100  # capped by the bundle
    assert fast["asked"][3][1]["url"] == "https://login.example.com/consent"  # evil.example.net never shown
    assert fast["logs"] and fast["logs"][0]["logger"] == "surface.worker"
    asks = [
        e for e in fast_events if e["tool"] in ("sampling/createMessage", "elicitation/create", "roots/list")
    ]
    results = [(e["tool"], e["status"], e["trigger"]) for e in asks if e["phase"] == "result"]
    assert results == [
        ("sampling/createMessage", "success", None),
        ("sampling/createMessage", "fail", None),
        ("sampling/createMessage", "blocked", "server_request_denied"),
        ("elicitation/create", "success", None),
        ("elicitation/create", "success", None),
        ("elicitation/create", "blocked", "server_request_denied"),
        ("roots/list", "success", None),
    ]


async def many_logs(g: Http, n: int) -> list[Any]:
    """``n`` calls whose upstream writes a log message just before the result; the logs the agent got."""
    logs: list[Any] = []

    async def logging(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {g.token('11')}"}, timeout=WAIT)
    async with Client(
        streamable_http_client(g.url, http_client=http), mode="legacy", logging_callback=logging
    ) as c:
        await c.send_ping()
        for _ in range(n):
            await c.call_tool("surface__log_something", {})
        with anyio.move_on_after(WAIT):  # the agent's SDK hands each notification to a task of its own
            while len(logs) < n:
                await anyio.sleep(0.05)
    return logs


def test_a_log_message_written_before_the_result_reaches_the_agent_on_every_call():
    """The upstream's log precedes its result on the pipe: the gateway forwards it before the result, on the
    call's stream, every time (it used to race the result and, once the call had ended, reach no one)."""
    n = 40
    runs = run_both(lambda g, world: anyio.run(many_logs, g, n))
    for fast in (True, False):
        logs, _, log = runs[fast]
        assert logs == [{"said": "careful"}] * n, (fast, len(logs), log[-2000:])
    assert runs[True][0] == runs[False][0]


# --- the agent's answer on the wire -----------------------------------------------------------------


def agent_session(http: httpx2.Client, g: Http, agent: str = "11") -> dict[str, str]:
    """A 2025-11-25 session of a raw client that may be asked to sample, ready for the streaming path.

    The SDK answers ``notifications/initialized`` with 202 before its handler runs (which records the
    connection); a ping, handled after it, makes the first streamed call deterministic here. A real
    client's call racing its own notification is served by the SDK path instead (correct, slower).
    """
    headers = open_session(http, g.url, g.token(agent), SAMPLING)
    r = http.post(g.url, json={"jsonrpc": "2.0", "id": "ping", "method": "ping"}, headers=headers)
    assert r.status_code == 200, r.text
    return headers


class Stream:
    """One streamed POST read event by event (raw HTTP, as an attacker or a hand-written client would)."""

    def __init__(self, http: httpx2.Client, url: str, headers: dict[str, str], body: dict[str, Any]) -> None:
        self.cm = http.stream("POST", url, json=body, headers=headers)
        self.response = self.cm.__enter__()
        self.lines = self.response.iter_lines()

    def next_message(self) -> dict[str, Any]:
        for line in self.lines:
            if line.startswith("data:") and line[5:].strip():
                return json.loads(line[5:])
        raise AssertionError("the stream ended")

    def close(self) -> None:
        self.cm.__exit__(None, None, None)


def answer_to(request: dict[str, Any], text: str = "4") -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request["id"],
        "result": {"role": "assistant", "content": {"type": "text", "text": text}, "model": "agent-model"},
    }


def sampled_events(world: World) -> list[tuple]:
    return [
        (e["phase"], e["status"], e.get("result_summary"))
        for e in audit_events(world)
        if e["tool"] == "sampling/createMessage"
    ]


def wire_attacks(g: Http, world: World) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with httpx2.Client(timeout=WAIT) as http:
        mine = agent_session(http, g)
        other_session = agent_session(http, g)
        stream = Stream(http, g.url, mine, tools_call(1, "surface__ask_model", {"n": 20}))
        try:
            out["content-type"] = stream.response.headers["content-type"]
            request = stream.next_message()
            out["asked"] = {k: v for k, v in request.items() if k != "id"}
            good = answer_to(request)

            def post(headers: dict[str, str], body: dict[str, Any]) -> tuple[int, str]:
                r = http.post(g.url, json=body, headers=headers)
                return r.status_code, r.text

            out["another session"] = post(other_session, answer_to(request, "from another session"))
            no_token = {k: v for k, v in mine.items() if k != "Authorization"}
            out["no token"] = post(no_token, answer_to(request, "from nobody"))
            another_agent = {**mine, "Authorization": f"Bearer {g.token('22')}"}
            out["another agent's token"] = post(another_agent, answer_to(request, "from another agent"))
            never_sent = {**answer_to(request, "never asked"), "id": "mcpgov-sse-" + "0" * 32}
            if not isinstance(request["id"], str):
                never_sent["id"] = 987654
            out["an id never sent"] = post(mine, never_sent)
            out["before the answer"] = sampled_events(world)
            out["the answer"] = post(mine, good)
            out["result"] = stream.next_message()
            out["result"]["result"]["_meta"].pop("io.mcpgov/run")
            out["replayed"] = post(mine, {**good, "result": {**good["result"], "model": "replayed"}})
        finally:
            stream.close()
        # the replay changed nothing: the next call still works and one answer was recorded
        r = http.post(g.url, json=tools_call(2, "surface__hello", {}), headers=mine)
        out["next call"] = r.status_code
    out["audit"] = sampled_events(world)
    return out


def test_answers_of_other_sessions_agents_ids_and_replays_are_refused_as_the_sdk_path_refuses_them():
    runs = run_both(wire_attacks)
    (fast, fast_events, fast_log), (sdk, sdk_events, _) = runs[True], runs[False]
    assert fast_log.count(STREAMED) == 1
    assert fast_events == sdk_events
    assert fast == sdk
    assert fast["content-type"].startswith("text/event-stream")
    assert fast["asked"]["method"] == "sampling/createMessage"
    # none of the stray answers reached the upstream: the result is the real answer's, recorded once
    assert fast["result"]["result"]["content"][0]["text"] == "model said: 4 (model=agent-model)"
    assert [phase for phase, *_ in fast["before the answer"]] == ["intent"]
    assert [phase for phase, *_ in fast["audit"]] == ["intent", "result"]
    assert "agent-model" in fast["audit"][1][2]
    assert fast["another agent's token"][0] == 404
    assert fast["no token"][0] == 401
    assert {fast[k][0] for k in ("another session", "an id never sent", "the answer", "replayed")} == {202}
    assert fast["next call"] == 200


@pytest.fixture
def asking_gateway(monkeypatch, world, portal) -> Http:
    """One gateway on the fast path (logging at DEBUG) in front of the asking servers."""
    monkeypatch.setenv("MCPGOV_FAST_PATH", "1")
    monkeypatch.setenv("MCPGOV_LOG_LEVEL", "DEBUG")
    asking_world(world, portal)
    return Http(world, portal, "--read-only")


def test_an_agent_that_disconnects_mid_stream_leaves_nothing_hanging(asking_gateway, world):
    g = asking_gateway
    try:
        with httpx2.Client(timeout=WAIT) as http:
            headers = agent_session(http, g)
            stream = Stream(http, g.url, headers, tools_call(1, "surface__ask_model", {"n": 20}))
            request = stream.next_message()
            assert str(request.get("id")).startswith("mcpgov-sse-"), request
            stream.close()  # the agent goes away while it is being asked
            deadline = time.monotonic() + WAIT
            while True:
                events = audit_events(world)
                calls = [e for e in events if e["tool"] == "ask_model" and e["phase"] == "result"]
                asks = [e for e in events if e["tool"] == "sampling/createMessage" and e["phase"] == "result"]
                if calls and asks:
                    break
                assert time.monotonic() < deadline, events
                time.sleep(0.1)
            # the upstream's request was answered (failed), the call's RESULT written as cancelled
            assert asks[0]["status"] == "fail" and "Connection closed" in asks[0]["result_summary"]
            assert calls[0]["status"] == "fail" and "cancelled" in calls[0]["result_summary"]
            # an answer arriving late goes nowhere, and the gateway serves the next call
            late = http.post(g.url, json=answer_to(request), headers=headers)
            assert late.status_code == 202
            r = http.post(
                g.url, json=tools_call(2, "surface__hello", {}), headers={**headers, "Accept": ACCEPT}
            )
            assert r.status_code == 200 and r.json()["result"]["content"][0]["text"] == "hello: hi"
    finally:
        log = g.stop()
    assert log.count(STREAMED) == 1
    assert "the agent's connection closed during tools/call surface__ask_model" in log
    assert re.search(r"Traceback", log) is None, log[-3000:]


def test_without_the_agents_initialized_notification_the_call_takes_the_sdk_path(asking_gateway):
    """The streaming path needs what the agent declared (its connection, known from
    ``notifications/initialized``); a client that never sent it is served by the SDK path."""
    g = asking_gateway
    try:
        with httpx2.Client(timeout=WAIT) as http:
            headers = {
                "Authorization": f"Bearer {g.token('11')}",
                "Accept": ACCEPT,
                "Content-Type": "application/json",
            }
            r = http.post(g.url, json=INIT, headers=headers)
            headers["Mcp-Session-Id"] = r.headers["mcp-session-id"]
            headers["Mcp-Protocol-Version"] = "2025-11-25"
            r = http.post(g.url, json=tools_call(1, "surface__hello", {}), headers=headers)
            assert r.status_code == 200 and "hello: hi" in r.text
    finally:
        log = g.stop()
    assert "HTTP fast path" not in log


def test_a_request_put_on_another_calls_stream_is_answered_after_that_call_ended(asking_gateway, world):
    """A 2025-11-25 server request names no call: the gateway puts it on the stream of the session's
    newest call. Here that call ends before the agent answers; the answer still reaches the request,
    as on the SDK path (the agent POSTs it: no stream needed)."""
    g = asking_gateway
    done: dict[str, Any] = {}

    async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        with anyio.fail_after(WAIT):  # answered once the call whose stream carried the question ended
            while "sleep" not in done:
                await anyio.sleep(0.05)
        return types.CreateMessageResult(role="assistant", content=types.TextContent(text="4"), model="m")

    async def main() -> None:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {g.token('11')}"}, timeout=WAIT)
        async with Client(
            streamable_http_client(g.url, http_client=http), mode="legacy", sampling_callback=sampling
        ) as c:
            await c.send_ping()  # after notifications/initialized has been handled (see agent_session)

            async def call(name: str, n: int) -> None:
                done[name] = await c.call_tool(f"surface__{name}", {"n": n})

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "ask_model_later", 1500)  # asks 1.5 s into the call
                with anyio.fail_after(WAIT):
                    while "ask_model_later" not in [e["tool"] for e in audit_events(world)]:
                        await anyio.sleep(0.05)
                tg.start_soon(call, "sleep", 3000)  # the newest call when the question comes

    try:
        anyio.run(main)
    finally:
        log = g.stop()
    assert done["sleep"].content[0].text == "slept"
    assert done["ask_model_later"].content[0].text == "model said: 4 (model=m)"
    asks = [
        e for e in audit_events(world) if e["tool"] == "sampling/createMessage" and e["phase"] == "result"
    ]
    assert [e["status"] for e in asks] == ["success"]
    assert "HTTP fast path: streaming tools/call surface__sleep" in log
