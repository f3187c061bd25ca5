"""MCP tasks (2025-11-25) through the real gateway process, against real upstreams: npm
``@modelcontextprotocol/server-everything`` (``simulate-research-query``) and ``task_server.py``.

The agent speaks raw JSON-RPC: the SDK 2.3 client has no ``tasks/*`` at 2025-11-25. What is shown: a
task-augmented call answers as it does directly; task ids are the gateway's and bound to the session
that created them (another session gets the unknown-task answer); a halt (a trigger, or a kill-switch
flag) cancels the task upstream and refuses its polls; polls do not consume the rate limit; status
notifications reach the agent with the gateway's id; the audit has one INTENT and one RESULT per task.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types
import pytest
from mcp import Client
from mcp.client.extension import ClientExtension, NotificationBinding
from mcp.shared.exceptions import MCPError

from tests.mcpgov.conftest import PY, ROOT, World
from tests.mcpgov.portal_double import PortalTestDouble
from tests.mcpgov.test_fast_http import message, open_session
from tests.mcpgov.test_gateway_identity import Http, base_doc
from tests.mcpgov.test_surface_e2e import free_port, http_gateway

TASK_SERVER = Path(__file__).with_name("task_server.py")
EVERYTHING = ROOT / "node_modules" / ".bin" / "mcp-server-everything"
WAIT = 30.0
PROTOCOL = "2025-11-25"
INIT_PARAMS = {
    "protocolVersion": PROTOCOL,
    "capabilities": {"tasks": {"list": {}, "cancel": {}}},
    "clientInfo": {"name": "tasks-test", "version": "0"},
}
POLICY_REFUSED = -32004
INVALID_PARAMS = -32602


class RawAgent:
    """An agent on a stdio MCP server speaking JSON-RPC lines (requests answered by id; notifications kept)."""

    def __init__(self, cmd: list[str], *, env: dict[str, str] | None = None, errlog: Path) -> None:
        self.err = open(errlog, "w")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
        )
        self.answers: dict[Any, queue.Queue[dict[str, Any]]] = {}
        self.notes: list[dict[str, Any]] = []
        self.ids = iter(range(1, 1_000_000))
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            if "id" in msg and "method" not in msg:
                self._box(msg["id"]).put(msg)
            elif "method" in msg and "id" not in msg:
                self.notes.append(msg)
            elif "method" in msg:  # a request of the server (roots, …): nothing to give
                self.send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "no"}})

    def _box(self, rid: Any) -> queue.Queue[dict[str, Any]]:
        with self.lock:
            return self.answers.setdefault(rid, queue.Queue())

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def start(self, method: str, params: dict[str, Any] | None = None) -> int:
        rid = next(self.ids)
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return rid

    def wait(self, rid: int, timeout: float = WAIT) -> dict[str, Any]:
        return self._box(rid).get(timeout=timeout)

    def request(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = WAIT
    ) -> dict[str, Any]:
        return self.wait(self.start(method, params), timeout)

    def initialize(self) -> dict[str, Any]:
        answer = self.request("initialize", INIT_PARAMS)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer["result"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.err.close()


def eventually(predicate, what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout:g}s: {what}"
        time.sleep(0.05)


def task_doc(world: World, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` knows ``task`` (task_server.py, ``job`` a read) and ``everything`` (server-everything)."""
    doc["servers"]["task"] = {
        "category": "other",
        "transport": "stdio",
        "command": PY,
        "args": [str(TASK_SERVER)],
        "tools": {"job": {"class": "read"}},
    }
    doc["servers"]["everything"] = {
        "category": "other",
        "transport": "stdio",
        "command": str(EVERYTHING),
        "args": ["stdio"],
        "tools": {"simulate-research-query": {"class": "read"}, "echo": {"class": "read"}},
    }
    for slug in ("task", "everything"):
        doc["environment_policy"]["bindings"][slug] = {"target": "local", "permission": "read_only"}
        doc["roles"]["code_agent"]["allowed_servers"].append(slug)
    world.write_config(
        servers=(),
        extra={
            "task": {
                "command": PY,
                "args": [str(TASK_SERVER)],
                "env": {"TASK_SERVER_LOG": str(upstream_log(world))},
            },
            "everything": {"command": str(EVERYTHING), "args": ["stdio"]},
        },
    )
    return doc


def task_world(world: World, *, rate_limits: dict[str, Any] | None = None) -> dict[str, Any]:
    """The offline world of these tests: the bundle file and the config with both task servers."""
    doc = task_doc(world, world.doc())
    if rate_limits is not None:
        doc["rate_limits"] = rate_limits
    world.write_bundle(doc)
    return doc


def upstream_log(world: World) -> Path:
    return world.base / "task-server.log"


def logged_requests(path: Path, method: str) -> list[dict[str, Any]]:
    """The params of every ``method`` request a logging task server wrote to ``path`` (none yet: [])."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [m["params"] for m in map(json.loads, lines) if m["method"] == method]


def upstream_saw(world: World, method: str) -> list[dict[str, Any]]:
    return logged_requests(upstream_log(world), method)


def gateway_agent(world: World, *extra: str, fast_path: bool = True) -> RawAgent:
    return RawAgent(
        [PY, *world.gateway_args(*extra)],
        env={"MCPGOV_LOG_LEVEL": "INFO", "MCPGOV_FAST_PATH": "1" if fast_path else "0"},
        errlog=world.base / f"gateway-{time.monotonic_ns()}.err",
    )


def task_call(agent: RawAgent, name: str, arguments: dict[str, Any], ttl: int = 60000) -> dict[str, Any]:
    return agent.request("tools/call", {"name": name, "arguments": arguments, "task": {"ttl": ttl}})


def audit(world: World, tool: str) -> list[dict[str, Any]]:
    return [e for e in world.events() if e["tool"] == tool]


def assert_approved_denied_withdrawn(world: World) -> None:
    """The audit of three approval waits of ``job``: approved and run, denied, withdrawn by the agent."""
    events = audit(world, "job")
    assert [(e["phase"], e["status"], e["trigger"]) for e in events] == [
        ("intent", None, "approval_required"),
        ("result", "success", None),
        ("intent", None, "approval_required"),
        ("result", "blocked", "approval_required"),
        ("intent", None, "approval_required"),
        ("result", "blocked", "approval_required"),
    ]
    assert events[5]["result_summary"] == "approval wait withdrawn by the agent (tasks/cancel)"


@pytest.fixture(scope="module")
def everything_server() -> Path:
    if not EVERYTHING.exists():
        pytest.fail(f"{EVERYTHING} is missing: run `make upstreams` (npm install)")
    return EVERYTHING


def test_research_task_answers_as_directly(world: World, everything_server: Path) -> None:
    """server-everything's ``simulate-research-query`` (taskSupport required), directly and through the gateway."""
    task_world(world)

    def run(agent: RawAgent, name: str) -> tuple[dict, dict, list[dict], dict]:
        init = agent.initialize()
        [tool] = [t for t in agent.request("tools/list")["result"]["tools"] if t["name"] == name]
        created = task_call(agent, name, {"topic": "tide pools"})["result"]
        tid = created["task"]["taskId"]
        polls = [agent.request("tasks/get", {"taskId": tid})["result"]]
        listed = agent.request("tasks/list")["result"]["tasks"]
        result = agent.request("tasks/result", {"taskId": tid})["result"]
        polls.append(agent.request("tasks/get", {"taskId": tid})["result"])
        assert [t["taskId"] for t in listed] == [tid]
        return init, tool, [created["task"], *polls], result

    direct = RawAgent([str(EVERYTHING), "stdio"], errlog=world.base / "direct.err")
    try:
        d_init, d_tool, d_tasks, d_result = run(direct, "simulate-research-query")
    finally:
        direct.close()
    agent = gateway_agent(world)
    try:
        g_init, g_tool, g_tasks, g_result = run(agent, "everything__simulate-research-query")
    finally:
        agent.close()

    assert d_init["capabilities"]["tasks"]["requests"] == {"tools": {"call": {}}}
    assert g_init["capabilities"]["tasks"] == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
    assert g_tool["execution"] == d_tool["execution"] == {"taskSupport": "required"}
    gid = g_tasks[0]["taskId"]
    assert gid.startswith("everything:") and gid != d_tasks[0]["taskId"]
    assert {t["taskId"] for t in g_tasks} == {gid}
    assert (
        [t["status"] for t in g_tasks]
        == [t["status"] for t in d_tasks]
        == ["working", "working", "completed"]
    )
    assert g_result["content"] == d_result["content"]
    assert "Research Report: tide pools" in g_result["content"][0]["text"]
    assert g_result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": gid}
    assert d_result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": d_tasks[0]["taskId"]}
    # one INTENT before it was forwarded, one RESULT when the result was fetched
    events = audit(world, "simulate-research-query")
    assert [(e["phase"], e["status"]) for e in events] == [("intent", None), ("result", "success")]
    assert events[0]["arguments"] == {"topic": "tide pools"}
    assert "Research Report" in events[1]["result_summary"]


def test_status_notifications_carry_the_gateways_id(world: World) -> None:
    task_world(world)
    agent = gateway_agent(world)
    try:
        agent.initialize()
        created = task_call(agent, "task__job", {"label": "a", "seconds": 0.3})["result"]
        gid = created["task"]["taskId"]
        assert gid.startswith("task:")
        assert agent.request("tasks/get", {"taskId": gid})["result"]["taskId"] == gid
        upstream_id = upstream_saw(world, "tasks/get")[-1]["taskId"]
        assert upstream_id not in gid
        done = eventually(
            lambda: [
                n
                for n in agent.notes
                if n["method"] == "notifications/tasks/status" and n["params"]["status"] == "completed"
            ],
            "a completed status notification",
        )
        assert done[0]["params"]["taskId"] == gid
        assert all(
            n["params"]["taskId"] == gid for n in agent.notes if n["method"] == "notifications/tasks/status"
        )
        result = agent.request("tasks/result", {"taskId": gid})["result"]
        assert result["content"] == [{"type": "text", "text": "done: a"}]
        # a finished task cannot be cancelled: the upstream's own error, passed on
        again = agent.request("tasks/cancel", {"taskId": gid})
        assert again["error"]["code"] == INVALID_PARAMS
        assert "terminal" in again["error"]["message"]
    finally:
        agent.close()
    assert [(e["phase"], e["status"]) for e in audit(world, "job")] == [
        ("intent", None),
        ("result", "success"),
    ]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "sdk-path"])
def test_halt_by_trigger_cancels_the_task_upstream_and_refuses_its_polls(
    world: World, fast_path: bool
) -> None:
    """The same on both stdio paths: task messages are the gateway's either way, the halting call is not."""
    task_world(world)
    agent = gateway_agent(world, fast_path=fast_path)
    try:
        agent.initialize()
        gid = task_call(agent, "task__job", {"label": "long", "seconds": 120})["result"]["task"]["taskId"]
        assert agent.request("tasks/get", {"taskId": gid})["result"]["status"] == "working"
        assert [c["task"] for c in upstream_saw(world, "tools/call")] == [{"ttl": 60000}]
        # trigger 1: a server the role may not use halts the session
        halted = agent.request("tools/call", {"name": "shell__run", "arguments": {"cmd": "ls"}})["result"]
        assert halted["isError"] and "unauthorized_server" in halted["content"][0]["text"]
        cancels = eventually(lambda: upstream_saw(world, "tasks/cancel"), "the upstream's tasks/cancel")
        gets_before = len(upstream_saw(world, "tasks/get"))
        for method in ("tasks/get", "tasks/result", "tasks/cancel"):
            refused = agent.request(method, {"taskId": gid})["error"]
            assert refused["code"] == POLICY_REFUSED
            assert "halted by trigger unauthorized_server" in refused["message"]
        listed = agent.request("tasks/list")["result"]["tasks"]
        assert [(t["taskId"], t["status"]) for t in listed] == [(gid, "cancelled")]
    finally:
        agent.close()
    assert len(cancels) == 1
    assert len(upstream_saw(world, "tasks/get")) == gets_before  # refused polls never reach the upstream
    assert len(upstream_saw(world, "tasks/cancel")) == 1
    events = audit(world, "job")
    assert [(e["phase"], e["status"], e["trigger"]) for e in events] == [
        ("intent", None, None),
        ("result", "blocked", "unauthorized_server"),
    ]
    assert events[1]["result_summary"].startswith("task cancelled upstream by governance")


def test_kill_switch_flag_mid_task_cancels_it_upstream(world: World) -> None:
    doc = task_world(world)
    agent = gateway_agent(world)
    try:
        agent.initialize()
        gid = task_call(agent, "task__job", {"label": "long", "seconds": 120})["result"]["task"]["taskId"]
        assert agent.request("tasks/get", {"taskId": gid})["result"]["status"] == "working"
        doc["version"] = world.next_version()
        doc["flags"] = [
            {
                "name": "task-off",
                "server": "task",
                "capability": "all",
                "enabled": False,
                "reason": "incident 7",
            }
        ]
        world.write_bundle(doc)  # the gateway watches the file and applies the re-signed bundle
        eventually(lambda: upstream_saw(world, "tasks/cancel"), "the upstream's tasks/cancel")
        refused = agent.request("tasks/get", {"taskId": gid})["error"]
        assert refused["code"] == POLICY_REFUSED
        assert (
            "MCP_KILL_SWITCH: task-off disabled by governance flag — reason: incident 7" in refused["message"]
        )
        # the session is halted as the next call would have halted it
        other = agent.request("tools/call", {"name": "everything__echo", "arguments": {"message": "hi"}})[
            "result"
        ]
        assert other["isError"] and "halted by trigger kill_switch_flag" in other["content"][0]["text"]
    finally:
        agent.close()
    events = audit(world, "job")
    assert [(e["phase"], e["status"], e["trigger"]) for e in events] == [
        ("intent", None, None),
        ("result", "blocked", "kill_switch_flag"),
    ]


def test_polls_do_not_consume_the_rate_limit(world: World) -> None:
    task_world(world, rate_limits={"global": {}, "per_server": {"task": {"max_calls_per_session": 2}}})
    agent = gateway_agent(world)
    try:
        agent.initialize()
        gid = task_call(agent, "task__job", {"label": "one", "seconds": 0.2})["result"]["task"]["taskId"]
        for _ in range(10):
            assert agent.request("tasks/get", {"taskId": gid})["result"]["taskId"] == gid
            agent.request("tasks/list")
        assert agent.request("tasks/result", {"taskId": gid})["result"]["content"][0]["text"] == "done: one"
        second = agent.request(
            "tools/call", {"name": "task__job", "arguments": {"label": "two", "seconds": 0}}
        )
        assert second["result"]["content"][0]["text"] == "done: two"
        third = agent.request(
            "tools/call", {"name": "task__job", "arguments": {"label": "three", "seconds": 0}}
        )
        assert third["result"]["isError"] and "rate_limit" in third["result"]["content"][0]["text"]
    finally:
        agent.close()
    assert len(upstream_saw(world, "tasks/get")) >= 10  # the polls did reach the upstream


def test_unknown_and_made_up_task_ids_get_the_same_answer(world: World) -> None:
    task_world(world)
    agent = gateway_agent(world)
    try:
        agent.initialize()
        gid = task_call(agent, "task__job", {"label": "x", "seconds": 60})["result"]["task"]["taskId"]
        assert agent.request("tasks/list")["result"]["tasks"][0]["taskId"] == gid
        agent.request("tasks/get", {"taskId": gid})
        upstream_id = upstream_saw(world, "tasks/get")[-1]["taskId"]
        answers = [
            agent.request(method, {"taskId": tid})["error"]
            for tid in ("task:made-up", gid + "x", upstream_id)
            for method in ("tasks/get", "tasks/result", "tasks/cancel")
        ]
        assert answers == [{"code": INVALID_PARAMS, "message": "Failed to retrieve task: Task not found"}] * 9
    finally:
        agent.close()


def test_another_session_or_agent_cannot_see_poll_or_cancel_a_task(
    world: World, portal: PortalTestDouble
) -> None:
    """HTTP, one gateway, one upstream: the task belongs to the governance session that created it."""
    doc = task_doc(world, base_doc(world))
    doc["agents"].append(
        {"id": "33", "slug": "helper", "roles": ["code_agent"], "environments": ["development"]}
    )
    world.publish(portal, doc)
    g = Http(world, portal)
    try:
        with httpx2.Client(timeout=60) as http:

            def post(headers: dict[str, str], method: str, params: dict[str, Any]) -> dict[str, Any]:
                r = http.post(
                    g.url,
                    json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                    headers=headers,
                )
                assert r.status_code == 200, r.text
                return message(r)

            owner = open_session(http, g.url, g.token("11"))
            init = http.post(
                g.url,
                json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS},
                headers={
                    k: v for k, v in owner.items() if k not in ("Mcp-Session-Id", "Mcp-Protocol-Version")
                },
            )
            assert message(init)["result"]["capabilities"]["tasks"]["requests"] == {"tools": {"call": {}}}
            created = post(
                owner,
                "tools/call",
                {"name": "task__job", "arguments": {"label": "mine", "seconds": 60}, "task": {"ttl": 60000}},
            )
            gid = created["result"]["task"]["taskId"]
            run = created["result"]["_meta"]["io.mcpgov/run"]
            assert post(owner, "tasks/get", {"taskId": gid})["result"]["status"] == "working"
            upstream_id = upstream_saw(world, "tasks/get")[-1]["taskId"]
            same_agent_other_session = open_session(http, g.url, g.token("11"))
            other_agent = open_session(http, g.url, g.token("11", sub="agent:33", client_id="client-33"))
            other_role = open_session(http, g.url, g.token("22"))  # an agent the gateway's role refuses
            same_agent_other_run = {**owner}  # the owner's transport session, another run id in _meta
            for headers, meta in (
                (same_agent_other_session, None),
                (other_agent, None),
                (same_agent_other_run, {"io.mcpgov/run": "another-run"}),
            ):
                for tid in (gid, upstream_id):
                    for method in ("tasks/get", "tasks/result", "tasks/cancel"):
                        params: dict[str, Any] = {"taskId": tid}
                        if meta:
                            params["_meta"] = meta
                        assert post(headers, method, params)["error"] == {
                            "code": INVALID_PARAMS,
                            "message": "Failed to retrieve task: Task not found",
                        }
                listed = post(headers, "tasks/list", {"_meta": meta} if meta else {})["result"]
                assert listed["tasks"] == [] and listed["_meta"]["io.mcpgov/run"] != run
            refused = post(other_role, "tasks/get", {"taskId": gid})["error"]
            assert refused["code"] == -32003 and "role_not_allowed" in refused["message"]
            # the owner still has it, untouched
            [mine] = post(owner, "tasks/list", {})["result"]["tasks"]
            assert (mine["taskId"], mine["status"]) == (gid, "working")
            assert post(owner, "tasks/cancel", {"taskId": gid})["result"]["status"] == "cancelled"
    finally:
        g.stop()
    assert [c["taskId"] for c in upstream_saw(world, "tasks/cancel")] == [upstream_id]  # only the owner's


def test_without_a_task_upstream_nothing_is_advertised_and_a_task_call_runs_plainly(world: World) -> None:
    doc = world.doc()
    world.write_bundle(doc)
    world.write_config(servers=("time",))
    agent = gateway_agent(world)
    try:
        assert "tasks" not in agent.initialize()["capabilities"]
        answer = task_call(agent, "time__get_current_time", {"timezone": "UTC"})["result"]
        assert "task" not in answer and not answer.get("isError")
        assert '"timezone": "UTC"' in answer["content"][0]["text"]
    finally:
        agent.close()
    assert [(e["phase"], e["status"]) for e in audit(world, "get_current_time")] == [
        ("intent", None),
        ("result", "success"),
    ]


def test_a_task_result_over_the_limit_is_withheld_and_halts(world: World) -> None:
    task_world(world, rate_limits={"global": {}, "per_server": {"task": {"max_response_bytes": 5}}})
    agent = gateway_agent(world)
    try:
        agent.initialize()
        gid = task_call(agent, "task__job", {"label": "a long label", "seconds": 0})["result"]["task"][
            "taskId"
        ]
        withheld = agent.request("tasks/result", {"taskId": gid})["result"]
        assert withheld["isError"] and "large_data_return" in withheld["content"][0]["text"]
        assert "done: a long label" not in json.dumps(withheld)  # the result itself is withheld
        assert withheld["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": gid}
        again = agent.request("tasks/result", {"taskId": gid})["error"]
        assert again["code"] == POLICY_REFUSED and "halted by trigger large_data_return" in again["message"]
    finally:
        agent.close()
    assert [(e["phase"], e["status"], e["trigger"]) for e in audit(world, "job")] == [
        ("intent", None, None),
        ("result", "blocked", "large_data_return"),
    ]


def test_a_revoked_client_cancels_its_tasks_upstream(world: World, portal: PortalTestDouble) -> None:
    """The enforcement client's revocation is the gateway's kill switch: its tasks stop too."""
    world.publish(portal, task_doc(world, world.doc()))
    agent = RawAgent(
        [PY, *world.gateway_args(portal=portal)],
        env={"MCPGOV_LOG_LEVEL": "INFO"},
        errlog=world.base / "gateway-portal.err",
    )
    try:
        agent.initialize()
        gid = task_call(agent, "task__job", {"label": "long", "seconds": 120})["result"]["task"]["taskId"]
        assert agent.request("tasks/get", {"taskId": gid})["result"]["status"] == "working"
        portal.revoke()
        eventually(lambda: upstream_saw(world, "tasks/cancel"), "the upstream's tasks/cancel")
        refused = agent.request("tasks/result", {"taskId": gid})["error"]
        assert refused["code"] == POLICY_REFUSED and "enforcement client was revoked" in refused["message"]
    finally:
        agent.close()


@pytest.fixture
def everything_http(world: World, everything_server: Path) -> Iterator[str]:
    """server-everything on streamable HTTP (2025-11-25 tasks), on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [str(EVERYTHING), "streamableHttp"],
        cwd=ROOT,
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=open(world.base / "everything-http.err", "w"),  # noqa: SIM115 (closed with the process)
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        eventually(lambda: _listening(port), "server-everything listening")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_tasks_to_an_http_upstream_answer_as_directly_and_halts_cancel_them(
    world: World, everything_http: str
) -> None:
    """server-everything over streamable HTTP: the task answers as on stdio; a halt cancels it upstream."""
    doc = world.doc()
    doc["servers"]["everything"] = {
        "category": "other",
        "transport": "http",
        "url": everything_http,
        "tools": {"simulate-research-query": {"class": "read"}, "echo": {"class": "read"}},
    }
    doc["environment_policy"]["bindings"]["everything"] = {"target": "local", "permission": "read_only"}
    doc["roles"]["code_agent"]["allowed_servers"].append("everything")
    world.write_bundle(doc)
    world.write_config(servers=(), extra={"everything": {"url": everything_http}})
    agent = gateway_agent(world)
    try:
        init = agent.initialize()
        assert init["capabilities"]["tasks"]["requests"] == {"tools": {"call": {}}}
        name = "everything__simulate-research-query"
        created = task_call(agent, name, {"topic": "tide pools"})["result"]
        gid = created["task"]["taskId"]
        assert gid.startswith("everything:") and created["task"]["status"] == "working"
        assert agent.request("tasks/get", {"taskId": gid})["result"]["taskId"] == gid
        result = agent.request("tasks/result", {"taskId": gid})["result"]
        assert "Research Report: tide pools" in result["content"][0]["text"]
        # the upstream's status notifications (on its HTTP streams) reach the agent with the gateway's id
        notes = eventually(
            lambda: [n for n in agent.notes if n["method"] == "notifications/tasks/status"],
            "a status notification",
        )
        assert {n["params"]["taskId"] for n in notes} == {gid}
        assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": gid}
        # a second task, then a halt: cancelled upstream, its polls refused
        second = task_call(agent, name, {"topic": "reefs", "depth": 5})["result"]["task"]["taskId"]
        halted = agent.request("tools/call", {"name": "shell__run", "arguments": {"cmd": "ls"}})["result"]
        assert halted["isError"] and "unauthorized_server" in halted["content"][0]["text"]
        refused = eventually(
            lambda: (
                (agent.request("tasks/get", {"taskId": second}).get("error") or {}).get("code")
                == POLICY_REFUSED
            ),
            "the second task refused",
        )
        assert refused
        # the sweep's cancel upstream answered: the task's RESULT says so (before the agent leaves)
        eventually(lambda: len(audit(world, "simulate-research-query")) == 4, "the second task's RESULT")
    finally:
        agent.close()
    events = audit(world, "simulate-research-query")
    assert [(e["phase"], e["status"], e["trigger"]) for e in events] == [
        ("intent", None, None),
        ("result", "success", None),
        ("intent", None, None),
        ("result", "blocked", "unauthorized_server"),
    ]
    assert events[3]["result_summary"].startswith("task cancelled upstream by governance")


class StatusNotes(ClientExtension):
    """The agent's side of 2025-11-25 status notifications (the SDK 2.3 tables have none): kept."""

    identifier = "com.example/task-status-notes"

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def notifications(self) -> list[NotificationBinding[Any]]:
        async def keep(params: Any) -> None:
            self.seen.append(params.model_dump(by_alias=True, mode="json", exclude_none=True))

        return [
            NotificationBinding(method="notifications/tasks/status", params_type=StatusParams, handler=keep)
        ]


class StatusParams(mcp_types.NotificationParams):
    model_config = {**mcp_types.NotificationParams.model_config, "extra": "allow"}


def test_over_http_status_notifications_reach_the_agents_get_stream(world: World) -> None:
    """A 2025-11-25 HTTP session (the SDK client, which opens the standalone GET stream): the upstream's
    status notifications reach it with the gateway's id."""
    task_world(world)
    notes = StatusNotes()

    async def main(url: str) -> None:
        async with Client(url, mode="legacy", extensions=[notes]) as c:
            await c.list_tools()
            # the SDK client refuses a CreateTaskResult: the task call goes below its result check
            session = c.session
            data: dict[str, Any] = {
                "method": "tools/call",
                "params": {
                    "name": "task__job",
                    "arguments": {"label": "n", "seconds": 0.5},
                    "task": {"ttl": 60000},
                },
            }
            opts: Any = {"timeout": WAIT}
            session._stamp(data, opts)
            created = await session._dispatcher.send_raw_request("tools/call", data["params"], opts)
            gid = created["task"]["taskId"]
            with anyio.fail_after(WAIT):
                while not any(n.get("status") == "completed" for n in notes.seen):
                    await anyio.sleep(0.05)
            assert {n["taskId"] for n in notes.seen} == {gid}

    with http_gateway(world) as url:
        anyio.run(main, url)


# a 2025-11-25 agent's long approval wait: a task hosted by the gateway (when the agent task-augments)


async def raw(c: Client, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A request below the SDK client's result check (it has no ``tasks/*`` and refuses a CreateTaskResult)."""
    session = c.session
    data: dict[str, Any] = {"method": method, "params": params}
    opts: Any = {"timeout": WAIT}
    session._stamp(data, opts)
    return await session._dispatcher.send_raw_request(method, data["params"], opts)


def approval_world(world: World, portal: PortalTestDouble) -> None:
    doc = task_doc(world, world.doc())
    doc["servers"]["task"]["tools"]["job"]["approval_required"] = True
    world.publish(portal, doc)


def decider(portal: PortalTestDouble) -> Callable[[str], None]:
    """Approve or deny the next approval-required call the portal has not decided yet (once it is there)."""
    decided: set[str] = set()

    def pending() -> list[dict[str, Any]]:
        return [
            e
            for evs in portal.events.values()
            for e in evs
            if e["trigger"] == "approval_required" and e["phase"] == "intent" and e["call_id"] not in decided
        ]

    def decide(decision: str) -> None:
        assert portal.wait_for(lambda: bool(pending()), timeout=WAIT)
        ev = pending()[0]
        decided.add(ev["call_id"])
        portal.approve(next(iter(portal.sessions)), ev["call_id"], decision)

    return decide


def test_a_2025_agents_task_augmented_approval_wait_is_a_gateway_task(
    world: World, portal: PortalTestDouble
) -> None:
    """The SDK client at 2025-11-25 task-augments an approval-required call: a CreateTaskResult at once, a
    gateway task ``working`` while a person decides; approved → forwarded, its result from ``tasks/result``;
    denied → the refusal; ``tasks/cancel`` withdraws the wait. Nothing reaches the upstream before approval."""
    approval_world(world, portal)
    decide = decider(portal)
    notes = StatusNotes()

    async def main() -> None:
        async with Client(world.gateway(portal=portal), mode="legacy", extensions=[notes]) as c:
            job = {"name": "task__job", "task": {"ttl": 60000}}
            outcomes = []
            for label, decision in (("yes", "approve"), ("no", "deny")):
                created = (await raw(c, "tools/call", {**job, "arguments": {"label": label, "seconds": 0}}))[
                    "task"
                ]
                gid = created["taskId"]
                assert gid.startswith("task:") and created["status"] == "working"
                assert "waiting for the approval of a person" in created["statusMessage"]
                assert (await raw(c, "tasks/get", {"taskId": gid}))["status"] == "working"
                assert len(upstream_saw(world, "tools/call")) == len(outcomes)  # not forwarded yet
                async with anyio.create_task_group() as tg:
                    tg.start_soon(anyio.to_thread.run_sync, decide, decision)
                    result = await raw(c, "tasks/result", {"taskId": gid})  # blocks until the decision
                assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": gid}
                assert (await raw(c, "tasks/get", {"taskId": gid}))["status"] == "completed"
                outcomes.append(result)
            assert outcomes[0]["content"][0]["text"] == "done: yes" and not outcomes[0].get("isError")
            assert outcomes[1]["isError"] and "Approval denied by" in outcomes[1]["content"][0]["text"]
            later = (await raw(c, "tools/call", {**job, "arguments": {"label": "later", "seconds": 0}}))[
                "task"
            ]
            cancelled = await raw(c, "tasks/cancel", {"taskId": later["taskId"]})
            assert (cancelled["taskId"], cancelled["status"]) == (later["taskId"], "cancelled")
            withdrawn = await raw(c, "tasks/result", {"taskId": later["taskId"]})
            assert withdrawn["isError"] and "withdrawn" in withdrawn["content"][0]["text"]
            with pytest.raises(MCPError) as again:
                await raw(c, "tasks/cancel", {"taskId": later["taskId"]})
            assert "terminal status 'cancelled'" in again.value.error.message
            listed = (await raw(c, "tasks/list", {}))["tasks"]
            assert [t["status"] for t in listed] == ["completed", "completed", "cancelled"]
            with pytest.raises(MCPError) as unknown:
                await raw(c, "tasks/get", {"taskId": "task:made-up"})
            assert unknown.value.error.message == "Failed to retrieve task: Task not found"
            with anyio.fail_after(WAIT):
                while sum(n.get("status") in ("completed", "cancelled") for n in notes.seen) < 3:
                    await anyio.sleep(0.05)

    anyio.run(main)
    assert [c["arguments"]["label"] for c in upstream_saw(world, "tools/call")] == ["yes"]
    assert_approved_denied_withdrawn(world)


def test_a_halt_withdraws_a_2025_agents_approval_task(world: World, portal: PortalTestDouble) -> None:
    approval_world(world, portal)

    async def main() -> None:
        async with Client(world.gateway(portal=portal), mode="legacy") as c:
            params = {
                "name": "task__job",
                "arguments": {"label": "wait", "seconds": 0},
                "task": {"ttl": 60000},
            }
            gid = (await raw(c, "tools/call", params))["task"]["taskId"]
            halted = await c.call_tool("shell__run", {"cmd": "ls"})
            assert halted.is_error and "unauthorized_server" in halted.content[0].text  # type: ignore[union-attr]
            with anyio.fail_after(WAIT):
                while len(audit(world, "job")) < 2:
                    await anyio.sleep(0.05)
            for method in ("tasks/get", "tasks/result"):
                with pytest.raises(MCPError) as refused:
                    await raw(c, method, {"taskId": gid})
                assert refused.value.error.code == POLICY_REFUSED
                assert "halted by trigger unauthorized_server" in refused.value.error.message

    anyio.run(main)
    assert upstream_saw(world, "tools/call") == []
    events = audit(world, "job")
    assert [(e["phase"], e["status"], e["trigger"]) for e in events] == [
        ("intent", None, "approval_required"),
        ("result", "blocked", "unauthorized_server"),
    ]
    assert events[1]["result_summary"].startswith("approval wait stopped by governance")


def test_over_http_a_2025_agents_approval_task_is_bound_to_its_session(
    world: World, portal: PortalTestDouble
) -> None:
    """HTTP: the approval task of a task-augmented call is the creating session's; another session gets
    "not found" for it; the owner's cancel withdraws the wait (nothing reaches the upstream)."""
    doc = task_doc(world, base_doc(world))
    doc["servers"]["task"]["tools"]["job"]["approval_required"] = True
    world.publish(portal, doc)
    g = Http(world, portal)
    try:
        with httpx2.Client(timeout=60) as http:

            def post(headers: dict[str, str], method: str, params: dict[str, Any]) -> dict[str, Any]:
                r = http.post(
                    g.url,
                    json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                    headers=headers,
                )
                assert r.status_code == 200, r.text
                return message(r)

            owner = open_session(http, g.url, g.token("11"))
            created = post(
                owner,
                "tools/call",
                {"name": "task__job", "arguments": {"label": "held", "seconds": 0}, "task": {"ttl": 60000}},
            )["result"]["task"]
            gid = created["taskId"]
            assert created["status"] == "working" and "waiting for the approval" in created["statusMessage"]
            other = open_session(http, g.url, g.token("11"))
            for method in ("tasks/get", "tasks/result", "tasks/cancel"):
                assert post(other, method, {"taskId": gid})["error"] == {
                    "code": INVALID_PARAMS,
                    "message": "Failed to retrieve task: Task not found",
                }
            assert post(other, "tasks/list", {})["result"]["tasks"] == []
            assert post(owner, "tasks/get", {"taskId": gid})["result"]["status"] == "working"
            assert post(owner, "tasks/cancel", {"taskId": gid})["result"]["status"] == "cancelled"
    finally:
        g.stop()
    assert upstream_saw(world, "tools/call") == []
    assert [(e["phase"], e["status"], e["trigger"]) for e in audit(world, "job")] == [
        ("intent", None, "approval_required"),
        ("result", "blocked", "approval_required"),
    ]
