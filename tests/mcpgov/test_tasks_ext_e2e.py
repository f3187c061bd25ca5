"""The 2026-07-28 tasks extension (``io.modelcontextprotocol/tasks``) through the real gateway process.

Upstream: ``task_ext_server.py``, an SDK ``MCPServer`` with the extension, on stdio and on streamable HTTP.
Agent: the official SDK client at 2026-07-28 declaring the extension (``advertise``), sending the
extension's ``tasks/get``, ``tasks/update``, ``tasks/cancel`` through its session. Shown: a task answers
as it does directly; ids are the gateway's and bound to the creating session (another session, the
upstream's own id and a made-up id get the same "not found"); each input request of a task is decided by
the server-request policy and audited; a halt cancels the task upstream and refuses its polls; an agent
without the extension (or a 2025-11-25 agent) gets the plain result; one RESULT per task, however its
polls and a cancel race.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.extension import advertise
from mcp.shared.exceptions import MCPError
from pydantic import TypeAdapter

from tests.mcpgov.conftest import PY, ROOT, World
from tests.mcpgov.test_surface_e2e import free_port, http_gateway, wait_serving
from tests.mcpgov.test_tasks_e2e import assert_approved_denied_withdrawn, audit, logged_requests

pytestmark = pytest.mark.slow

SERVER = Path(__file__).with_name("task_ext_server.py")
TASKS = "io.modelcontextprotocol/tasks"
MODERN = "2026-07-28"
WAIT = 30.0
POLICY_REFUSED = -32004
WIRE = TypeAdapter(dict[str, Any])
TERMINAL = ("completed", "failed", "cancelled")


class TaskRequest(types.Request[dict[str, Any], str]):
    """The agent's ``tasks/*`` requests (the SDK 2.3 has the extension interface, not the methods)."""

    name_param: ClassVar[str | None] = "taskId"


def log_path(world: World) -> Path:
    return world.base / "task-ext.log"


def upstream_saw(world: World, method: str) -> list[dict[str, Any]]:
    return logged_requests(log_path(world), method)


def ext_world(world: World, *, url: str | None = None, server_requests: dict[str, Any] | None = None) -> dict:
    doc = world.doc()
    doc["servers"]["ext"] = {
        "category": "other",
        "transport": "http" if url else "stdio",
        **({"url": url} if url else {"command": PY, "args": [str(SERVER)]}),
        "tools": {"job": {"class": "read"}},
    }
    if server_requests is not None:
        doc["servers"]["ext"]["server_requests"] = server_requests
    doc["environment_policy"]["bindings"]["ext"] = {"target": "local", "permission": "read_only"}
    doc["roles"]["code_agent"]["allowed_servers"].append("ext")
    world.write_bundle(doc)
    entry = (
        {"url": url}
        if url
        else {"command": PY, "args": [str(SERVER)], "env": {"TASK_SERVER_LOG": str(log_path(world))}}
    )
    world.write_config(servers=(), extra={"ext": entry})
    return doc


@pytest.fixture
def http_upstream(world: World) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [PY, str(SERVER), "--http", str(port)],
        cwd=ROOT,
        env={"TASK_SERVER_LOG": str(log_path(world)), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=sys.stderr,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        wait_serving(proc, url, MODERN)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _never(
    ctx: Any, params: Any
) -> Any:  # declared, so the agent may be asked; answered by tasks/update
    raise AssertionError("a task's input request is answered with tasks/update, not asked on the wire")


def agent(target: Any, *, tasks: bool = True, mode: str = "auto") -> Client:
    """The SDK client declaring elicitation and sampling, and (``tasks``) the tasks extension."""
    return Client(
        target,
        mode=mode,  # type: ignore[arg-type]
        extensions=[advertise(TASKS)] if tasks else None,
        elicitation_callback=_never,
        sampling_callback=_never,
    )


async def call(c: Client, name: str, arguments: dict[str, Any], run: str | None = None) -> dict[str, Any]:
    params = types.CallToolRequestParams(
        name=name, arguments=arguments, _meta={"io.mcpgov/run": run} if run else None
    )
    return await c.session.send_request(types.CallToolRequest(params=params), WIRE)


async def task(c: Client, method: str, params: dict[str, Any], run: str | None = None) -> dict[str, Any]:
    if run:
        params = {**params, "_meta": {"io.mcpgov/run": run}}
    return await c.session.send_request(TaskRequest(method=method, params=params), WIRE)


async def until(c: Client, tid: str, statuses: tuple[str, ...], run: str | None = None) -> dict[str, Any]:
    with anyio.fail_after(WAIT):
        while True:
            got = await task(c, "tasks/get", {"taskId": tid}, run)
            if got["status"] in statuses:
                return got
            await anyio.sleep(0.05)


async def answer_and_finish(
    c: Client, tid: str, run: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    asked = await until(c, tid, ("input_required", *TERMINAL), run)
    [(key, request)] = asked["inputRequests"].items()
    await task(
        c,
        "tasks/update",
        {"taskId": tid, "inputResponses": {key: {"action": "accept", "content": {"colour": "red"}}}},
        run,
    )
    return request, await until(c, tid, TERMINAL, run)


def phases(events: list[dict[str, Any]]) -> list[tuple[str, str | None, str | None]]:
    return [(e["phase"], e["status"], e["trigger"]) for e in events]


def test_a_task_with_an_input_request_answers_as_directly_and_is_audited(world: World) -> None:
    ext_world(world)

    async def run(target: Any, name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], Any]:
        async with agent(target) as c:
            assert c.session.protocol_version == MODERN
            caps = c.session.server_capabilities
            created = await call(c, name, {"label": "a", "ask": "elicit"})
            request, done = await answer_and_finish(c, created["taskId"])
            return created, request, done, caps

    direct = StdioServerParameters(command=PY, args=[str(SERVER)])
    d_created, d_request, d_done, d_caps = anyio.run(run, direct, "job")
    g_created, g_request, g_done, g_caps = anyio.run(
        run, world.gateway("--upstream-mode", MODERN), "ext__job"
    )
    assert TASKS in (d_caps.extensions or {}) and TASKS in (g_caps.extensions or {})
    assert d_created["resultType"] == g_created["resultType"] == "task"
    assert g_request == d_request  # the question as the server asked it
    assert g_done["status"] == d_done["status"] == "completed"
    assert g_done["result"]["content"] == d_done["result"]["content"]
    assert (
        g_done["result"]["content"][0]["text"]
        == 'done: a ({"action": "accept", "content": {"colour": "red"}})'
    )
    # the agent sees the gateway's id, never the upstream's
    [upstream_call] = upstream_saw(world, "tools/call")
    assert upstream_call["_meta"]["io.modelcontextprotocol/clientCapabilities"]["extensions"] == {TASKS: {}}
    upstream_ids = {p["taskId"] for p in upstream_saw(world, "tasks/get")}
    assert g_created["taskId"].startswith("ext:") and g_created["taskId"] not in upstream_ids
    assert g_done["taskId"] == g_created["taskId"]
    # one INTENT and one RESULT for the call, one pair for the question it asked
    assert phases(audit(world, "job")) == [("intent", None, None), ("result", "success", None)]
    assert "done: a" in audit(world, "job")[1]["result_summary"]
    elicit = audit(world, "elicitation/create")
    assert phases(elicit) == [("intent", None, None), ("result", "success", None)]
    assert "accept" in elicit[1]["result_summary"]


def test_over_http_a_task_belongs_to_its_session_only(world: World, http_upstream: str) -> None:
    """Tasks to an HTTP upstream; another run of the same agent, the upstream's own id and a made-up id
    all get the answer of an unknown task, for every method, and nothing reaches the upstream."""
    ext_world(world, url=http_upstream)

    async def main(url: str) -> None:
        async with agent(url) as c:
            created = await call(c, "ext__job", {"label": "mine", "seconds": 60}, run="owner")
            gid = created["taskId"]
            assert (await task(c, "tasks/get", {"taskId": gid}, "owner"))["status"] == "working"
            [upstream_id] = {p["taskId"] for p in upstream_saw(world, "tasks/get")}
            answers = []
            for tid, run in ((gid, "intruder"), (upstream_id, "owner"), ("ext:made-up", "owner")):
                for method, extra in (
                    ("tasks/get", {}),
                    ("tasks/update", {"inputResponses": {"k": {"action": "accept"}}}),
                    ("tasks/cancel", {}),
                ):
                    with pytest.raises(MCPError) as refused:
                        await task(c, method, {"taskId": tid, **extra}, run)
                    answers.append((refused.value.error.code, refused.value.error.message))
            assert set(answers) == {(types.INVALID_PARAMS, "Failed to retrieve task: Task not found")}
            assert upstream_saw(world, "tasks/cancel") == upstream_saw(world, "tasks/update") == []
            assert (await task(c, "tasks/get", {"taskId": gid}, "owner"))["status"] == "working"
            await task(c, "tasks/cancel", {"taskId": gid}, "owner")
            assert upstream_saw(world, "tasks/cancel") == [{"taskId": upstream_id}]

    with http_gateway(world, "--upstream-mode", MODERN) as url:
        anyio.run(main, url)
    events = audit(world, "job")
    assert phases(events) == [("intent", None, None), ("result", "fail", None)]
    assert events[1]["result_summary"] == "task cancelled by the agent"


def test_a_halt_cancels_the_task_upstream_and_refuses_its_polls(world: World) -> None:
    ext_world(world)

    async def main() -> None:
        async with agent(world.gateway("--upstream-mode", MODERN)) as c:
            gid = (await call(c, "ext__job", {"label": "long", "seconds": 120}))["taskId"]
            assert (await task(c, "tasks/get", {"taskId": gid}))["status"] == "working"
            halted = await call(c, "shell__run", {"cmd": "ls"})  # trigger 1 halts the session
            assert halted["isError"] and "unauthorized_server" in halted["content"][0]["text"]
            with anyio.fail_after(WAIT):
                while not upstream_saw(world, "tasks/cancel"):
                    await anyio.sleep(0.05)
            gets = len(upstream_saw(world, "tasks/get"))
            for method in ("tasks/get", "tasks/update", "tasks/cancel"):
                with pytest.raises(MCPError) as refused:
                    await task(c, method, {"taskId": gid, "inputResponses": {}})
                assert refused.value.error.code == POLICY_REFUSED
                assert "halted by trigger unauthorized_server" in refused.value.error.message
            assert len(upstream_saw(world, "tasks/get")) == gets  # refused polls never reach the upstream

    anyio.run(main)
    assert len(upstream_saw(world, "tasks/cancel")) == 1
    events = audit(world, "job")
    assert phases(events) == [("intent", None, None), ("result", "blocked", "unauthorized_server")]
    assert events[1]["result_summary"].startswith("task cancelled upstream by governance")


def test_a_refused_sampling_request_stops_the_task_and_never_reaches_the_agent(world: World) -> None:
    """Sampling is off by default: the task is cancelled upstream, the agent told why; the session goes on."""
    ext_world(world)

    async def main() -> None:
        async with agent(world.gateway("--upstream-mode", MODERN)) as c:
            gid = (await call(c, "ext__job", {"label": "s", "ask": "sample"}))["taskId"]
            with anyio.fail_after(WAIT):
                while True:
                    try:
                        got = await task(c, "tasks/get", {"taskId": gid})
                    except MCPError as exc:
                        refused = exc.error
                        break
                    assert "inputRequests" not in got
                    await anyio.sleep(0.05)
            assert refused.code == POLICY_REFUSED and "server_request_denied" in refused.message
            assert refused.data == {"trigger": "server_request_denied"}
            again = await call(c, "ext__job", {"label": "next", "seconds": 0}, run=None)
            assert again["resultType"] == "task"  # not halted: the server asked, not the agent

    anyio.run(main)
    assert len(upstream_saw(world, "tasks/cancel")) == 1
    first = audit(world, "job")[:2]
    assert phases(first) == [("intent", None, None), ("result", "blocked", "server_request_denied")]
    assert phases(audit(world, "sampling/createMessage")) == [
        ("intent", None, None),
        ("result", "blocked", "server_request_denied"),
    ]


def test_answers_to_questions_never_shown_are_not_passed_on(world: World) -> None:
    ext_world(world)

    async def main() -> None:
        async with agent(world.gateway("--upstream-mode", MODERN)) as c:
            gid = (await call(c, "ext__job", {"label": "q", "ask": "elicit", "seconds": 0.2}))["taskId"]
            asked = await until(c, gid, ("input_required",))
            [key] = asked["inputRequests"]
            forged = {"not-asked": {"action": "accept", "content": {"colour": "blue"}}}
            assert (await task(c, "tasks/update", {"taskId": gid, "inputResponses": forged}))[
                "resultType"
            ] == "complete"
            real = {key: {"action": "accept", "content": {"colour": "red"}}, **forged}
            await task(c, "tasks/update", {"taskId": gid, "inputResponses": real})
            await task(
                c, "tasks/update", {"taskId": gid, "inputResponses": {key: {"action": "decline"}}}
            )  # twice
            done = await until(c, gid, TERMINAL)
            assert "red" in done["result"]["content"][0]["text"]

    anyio.run(main)
    # one update reached the upstream: the first answer to the question asked, nothing else
    [update] = upstream_saw(world, "tasks/update")
    assert list(update["inputResponses"].values()) == [{"action": "accept", "content": {"colour": "red"}}]
    assert list(update["inputResponses"]) != ["not-asked"]


def test_agents_without_the_extension_get_the_plain_result(world: World) -> None:
    """A 2026-07-28 agent that did not declare it and a 2025-11-25 agent: the gateway polls the task itself."""
    ext_world(world)

    async def main(mode: str) -> str:
        async with agent(world.gateway("--upstream-mode", MODERN), tasks=False, mode=mode) as c:
            result = await c.call_tool("ext__job", {"label": mode, "seconds": 0.2})
            return result.content[0].text

    assert anyio.run(main, "auto") == "done: auto"
    assert anyio.run(main, "legacy") == "done: legacy"
    assert len(upstream_saw(world, "tools/call")) == 2 and upstream_saw(world, "tasks/get")
    assert phases(audit(world, "job")) == [
        ("intent", None, None),
        ("result", "success", None),
        ("intent", None, None),
        ("result", "success", None),
    ]


def test_a_result_over_the_limit_is_withheld_and_halts(world: World) -> None:
    ext_world(world)

    async def main() -> None:
        async with agent(world.gateway("--upstream-mode", MODERN)) as c:
            gid = (await call(c, "ext__job", {"label": "big", "seconds": 0.1, "pad": 1_200_000}))["taskId"]
            done = await until(c, gid, TERMINAL)
            assert done["status"] == "completed" and done["result"]["isError"]
            assert "large_data_return" in done["result"]["content"][0]["text"]
            assert "xxxx" not in json.dumps(done)
            with pytest.raises(MCPError) as refused:
                await task(c, "tasks/get", {"taskId": gid})
            assert "halted by trigger large_data_return" in refused.value.error.message

    anyio.run(main)
    assert phases(audit(world, "job"))[-1] == ("result", "blocked", "large_data_return")


def test_a_cancel_racing_the_result_leaves_one_result(world: World) -> None:
    ext_world(world)

    async def main() -> None:
        async with agent(world.gateway("--upstream-mode", MODERN)) as c:
            for n in range(4):
                gid = (await call(c, "ext__job", {"label": f"r{n}", "seconds": 0.05 * n}))["taskId"]
                async with anyio.create_task_group() as tg:
                    for _ in range(3):
                        tg.start_soon(task, c, "tasks/get", {"taskId": gid})
                    tg.start_soon(task, c, "tasks/cancel", {"taskId": gid})
                final = await until(c, gid, TERMINAL)
                assert final == await task(c, "tasks/get", {"taskId": gid}) | {"_meta": final.get("_meta")}

    anyio.run(main)
    events = audit(world, "job")
    assert [e["phase"] for e in events] == ["intent", "result"] * 4
    assert len({e["call_id"] for e in events}) == 4


def test_a_long_approval_wait_is_a_gateway_task(world: World, portal: Any) -> None:
    """An approval-required call of an agent with the extension: a task of the gateway's, ``working`` while
    a person decides in the portal; approved → the forwarded call's result; denied → the refusal; a
    cancel withdraws the wait (nothing reaches the upstream)."""
    doc = ext_world(world)
    doc["servers"]["ext"]["tools"]["job"]["approval_required"] = True
    world.publish(portal, doc)
    decided: set[str] = set()

    def decide_when_asked(decision: str) -> None:
        def pending() -> list[dict[str, Any]]:
            return [
                e
                for evs in portal.events.values()
                for e in evs
                if e["trigger"] == "approval_required"
                and e["phase"] == "intent"
                and e["call_id"] not in decided
            ]

        assert portal.wait_for(lambda: bool(pending()), timeout=WAIT)
        ev = pending()[0]
        decided.add(ev["call_id"])
        portal.approve(next(iter(portal.sessions)), ev["call_id"], decision)

    async def main() -> None:
        async with agent(world.gateway("--upstream-mode", MODERN, portal=portal)) as c:
            outcomes = []
            for label, decision in (("yes", "approve"), ("no", "deny")):
                created = await call(c, "ext__job", {"label": label, "seconds": 0})
                assert created["resultType"] == "task" and created["status"] == "working"
                assert "waiting for the approval of a person" in created["statusMessage"]
                assert (await task(c, "tasks/get", {"taskId": created["taskId"]}))["status"] == "working"
                await anyio.to_thread.run_sync(decide_when_asked, decision)
                outcomes.append((await until(c, created["taskId"], TERMINAL))["result"])
            assert outcomes[0]["content"][0]["text"] == "done: yes" and not outcomes[0].get("isError")
            assert outcomes[1]["isError"] and "Approval denied by" in outcomes[1]["content"][0]["text"]
            withdrawn = await call(c, "ext__job", {"label": "later", "seconds": 0})
            await task(c, "tasks/cancel", {"taskId": withdrawn["taskId"]})
            assert (await task(c, "tasks/get", {"taskId": withdrawn["taskId"]}))["status"] == "cancelled"

    anyio.run(main)
    assert [c["arguments"]["label"] for c in upstream_saw(world, "tools/call")] == ["yes"]
    assert_approved_denied_withdrawn(world)


def test_a_halt_withdraws_an_approval_wait(world: World, portal: Any) -> None:
    doc = ext_world(world)
    doc["servers"]["ext"]["tools"]["job"]["approval_required"] = True
    world.publish(portal, doc)

    async def main() -> None:
        async with agent(world.gateway("--upstream-mode", MODERN, portal=portal)) as c:
            gid = (await call(c, "ext__job", {"label": "wait", "seconds": 0}))["taskId"]
            halted = await call(c, "shell__run", {"cmd": "ls"})
            assert halted["isError"] and "unauthorized_server" in halted["content"][0]["text"]
            with anyio.fail_after(WAIT):
                while len(audit(world, "job")) < 2:
                    await anyio.sleep(0.05)
            with pytest.raises(MCPError) as refused:
                await task(c, "tasks/get", {"taskId": gid})
            assert refused.value.error.code == POLICY_REFUSED
            assert "halted by trigger unauthorized_server" in refused.value.error.message

    anyio.run(main)
    assert upstream_saw(world, "tools/call") == []
    events = audit(world, "job")
    assert phases(events) == [
        ("intent", None, "approval_required"),
        ("result", "blocked", "unauthorized_server"),
    ]
    assert events[1]["result_summary"].startswith("approval wait stopped by governance")
