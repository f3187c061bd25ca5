"""The MCP surface beyond tools through the real gateway process, against real upstreams: resources,
prompts, completion, logging, ping, progress, cancellation, list changes, subscriptions (the SDK server
``surface_server.py``) and server-to-client requests (it and npm ``@modelcontextprotocol/server-everything``).

Each capability is asked directly of the upstream and through the gateway and must answer alike (names
carry the server prefix); each governed one is refused when the bundle says so, with its audit events.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from tests.conftest import free_port
from tests.mcpgov.conftest import PY, ROOT, World
from tests.mcpgov.surface_server import TOOLS as SURFACE_TOOLS

pytestmark = pytest.mark.slow

SURFACE = Path(__file__).with_name("surface_server.py")
EVERYTHING = ROOT / "node_modules" / ".bin" / "mcp-server-everything"
WAIT = 60  # generous bound for "it happens" on a loaded machine; never asserted as a duration


def markers(world: World) -> Path:
    path = world.base / "markers"
    path.mkdir(exist_ok=True)
    return path


def surface_world(
    world: World, server_requests: dict[str, Any] | None = None, tools: list[str] | None = None
) -> None:
    """The bundle knows the ``surface`` server (its tools approved as reads); the config starts it."""
    doc = world.doc()
    doc["servers"]["surface"] = {
        "category": "other",
        "transport": "stdio",
        "command": PY,
        "args": [str(SURFACE)],
        "tools": {name: {"class": "read"} for name in tools or SURFACE_TOOLS},
    }
    if server_requests is not None:
        doc["servers"]["surface"]["server_requests"] = server_requests
    doc["environment_policy"]["bindings"]["surface"] = {"target": "local", "permission": "read_only"}
    doc["roles"]["code_agent"]["allowed_servers"].append("surface")
    world.write_bundle(doc)
    world.write_config(
        servers=("time",),
        extra={
            "surface": {
                "command": PY,
                "args": [str(SURFACE)],
                "env": {"SURFACE_MARKERS": str(markers(world))},
            }
        },
    )


def direct(world: World) -> StdioServerParameters:
    return StdioServerParameters(
        command=PY, args=[str(SURFACE)], env={"SURFACE_MARKERS": str(markers(world))}
    )


def audit(world: World, tool: str) -> list[dict[str, Any]]:
    return [e for e in world.events() if e["tool"] == tool]


async def wait_for(predicate, what: str) -> None:
    with anyio.fail_after(WAIT):
        while not predicate():
            await anyio.sleep(0.05)


def test_resources_prompts_completion_answer_as_directly(world: World) -> None:
    surface_world(world)

    async def main() -> None:
        async with Client(direct(world), mode="legacy") as d:
            d_resources = await d.list_resources()
            d_templates = await d.list_resource_templates()
            d_read = await d.read_resource("test://static/readme")
            d_item = await d.read_resource("test://item/42")
            d_prompts = await d.list_prompts()
            d_prompt = await d.get_prompt("greet", {"name": "Ada"})
            d_complete = await d.complete(
                types.PromptReference(name="greet"), {"name": "name", "value": "Al"}
            )
        async with Client(world.gateway(), mode="legacy") as g:
            caps = g.session.server_capabilities
            assert caps.resources is not None and caps.prompts is not None and caps.completions is not None
            assert caps.tools.list_changed and caps.resources.list_changed
            resources = await g.list_resources()
            templates = await g.list_resource_templates()
            read = await g.read_resource("surface+test://static/readme")
            item = await g.read_resource("surface+test://item/42")
            prompts = await g.list_prompts()
            prompt = await g.get_prompt("surface__greet", {"name": "Ada"})
            complete = await g.complete(
                types.PromptReference(name="surface__greet"), {"name": "name", "value": "Al"}
            )
            await g.send_ping()
        # the forbidden URI (*prod*) is hidden; everything else as directly, prefixed with the server
        assert sorted(r.uri for r in resources.resources) == sorted(
            f"surface+{r.uri}" for r in d_resources.resources if "prod" not in r.uri
        )
        assert [t.uri_template for t in templates.resource_templates] == [
            f"surface+{t.uri_template}" for t in d_templates.resource_templates
        ]
        assert read.contents[0].text == d_read.contents[0].text
        assert read.contents[0].uri == "surface+test://static/readme"
        assert item.contents[0].text == d_item.contents[0].text == "item 42"
        assert [p.name for p in prompts.prompts] == [f"surface__{p.name}" for p in d_prompts.prompts]
        assert prompt.messages == d_prompt.messages
        assert complete.completion.values == d_complete.completion.values == ["Alice", "Alicia"]
        reads = audit(world, "resources/read")
        assert [(e["phase"], e["status"], e["server"]) for e in reads] == [
            ("intent", None, "surface"),
            ("result", "success", "surface"),
        ] * 2
        assert "test://static/readme" in reads[0]["args_summary"]
        assert reads[1]["bytes"] == len(d_read.contents[0].text)
        gets = audit(world, "prompts/get")
        assert [(e["phase"], e["status"]) for e in gets] == [("intent", None), ("result", "success")]
        assert "Say hello to Ada" in gets[1]["result_summary"]

    anyio.run(main)


def test_forbidden_resource_uri_is_refused_halts_and_never_reaches_the_upstream(world: World) -> None:
    surface_world(world)

    async def main() -> None:
        async with Client(world.gateway(), mode="legacy") as g:
            with pytest.raises(MCPError) as refused:
                await g.read_resource("surface+test://secret/prod-keys")
            assert "production_environment" in refused.value.error.message
            assert "forbidden pattern '*prod*'" in refused.value.error.message
            assert refused.value.error.data == {"trigger": "production_environment"}
            # the session is halted: the next read, even an allowed one, is refused
            with pytest.raises(MCPError) as halted:
                await g.read_resource("surface+test://static/readme")
            assert halted.value.error.data == {"trigger": "session_halted"}
            assert "halted by trigger production_environment" in halted.value.error.message
        reads = audit(world, "resources/read")
        assert [(e["phase"], e["status"], e["trigger"]) for e in reads] == [
            ("intent", None, None),
            ("result", "blocked", "production_environment"),
            ("intent", None, None),
            ("result", "blocked", "session_halted"),
        ]
        assert "AKIA" not in json.dumps(world.events())

    anyio.run(main)


def test_resource_of_a_server_the_role_may_not_use_halts_and_large_resources_are_withheld(
    world: World,
) -> None:
    surface_world(world)

    async def main() -> None:
        async with Client(world.gateway(), mode="legacy") as g:
            with pytest.raises(MCPError) as big:
                await g.read_resource("surface+test://big")
            assert "large_data_return" in big.value.error.message
        async with Client(world.gateway(), mode="legacy") as g:
            with pytest.raises(MCPError) as shell:
                await g.read_resource("shell+file:///etc/passwd")
            assert "unauthorized_server" in shell.value.error.message
            with pytest.raises(MCPError) as unknown:
                await g.read_resource("file:///etc/passwd")
            assert unknown.value.error.code == -32002
        results = [e for e in audit(world, "resources/read") if e["phase"] == "result"]
        assert sorted((e["server"], e["status"], e["trigger"], e["bytes"]) for e in results) == [
            ("shell", "blocked", "unauthorized_server", 0),
            ("surface", "blocked", "large_data_return", 2 * 1024 * 1024),
        ]

    anyio.run(main)


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "sdk-path"])
def test_progress_logging_and_cancellation_cross_the_gateway(world: World, fast_path: bool) -> None:
    surface_world(world)
    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async def main() -> None:
        async with Client(direct(world), mode="legacy") as d:
            d_progress: list[tuple[float, float | None, str | None]] = []

            async def d_cb(p: float, total: float | None, message: str | None) -> None:
                d_progress.append((p, total, message))

            d_result = await d.call_tool("slow_progress", {"n": 4}, progress_callback=d_cb)
        async with Client(world.gateway(fast_path=fast_path), mode="legacy", logging_callback=on_log) as g:
            progress: list[tuple[float, float | None, str | None]] = []

            async def cb(p: float, total: float | None, message: str | None) -> None:
                progress.append((p, total, message))

            result = await g.call_tool("surface__slow_progress", {"n": 4}, progress_callback=cb)
            assert result.content == d_result.content
            assert progress == d_progress == [(i, 4, f"step {i}") for i in range(1, 5)]

            await g.set_logging_level("info")
            assert (markers(world) / "level").read_text() == "info"
            await g.call_tool("surface__log_something", {})
            await wait_for(lambda: logs, "the upstream's log message")
            assert (logs[0].level, logs[0].logger, logs[0].data) == (
                "warning",
                "surface.worker",
                {"said": "careful"},
            )

            # the agent gives up on a call: the upstream is told, the audit says so
            with anyio.move_on_after(2):
                await g.call_tool("surface__wait_forever", {})
            await wait_for(lambda: (markers(world) / "cancelled").exists(), "the upstream's cancellation")
            await g.send_ping()  # the gateway still answers
        waits = audit(world, "wait_forever")
        assert [(e["phase"], e["status"]) for e in waits] == [("intent", None), ("result", "fail")]
        assert "cancelled" in waits[1]["result_summary"]

    anyio.run(main)


def test_list_changed_rediscovers_keeps_unknown_tools_hidden_and_tells_the_agent_on_a_new_bundle(
    world: World,
) -> None:
    surface_world(world)
    notes: list[str] = []

    async def on_message(message: Any) -> None:
        if not isinstance(message, Exception):
            notes.append(message.method)

    async def main() -> None:
        async with Client(world.gateway(), mode="legacy", message_handler=on_message) as g:
            first = {t.name for t in (await g.list_tools()).tools}
            assert "surface__hello" in first and "surface__late_tool" not in first
            assert (await g.call_tool("surface__add_tool", {})).content[0].text == "late_tool added"
            # the upstream announced it; the gateway listed it again; unknown to the bundle, it stays hidden
            with anyio.fail_after(WAIT):
                while True:
                    refused = await g.call_tool("surface__late_tool", {})
                    if "unknown_tool" in refused.content[0].text:
                        break
                    await anyio.sleep(0.1)
            assert refused.is_error
            assert "surface__late_tool" not in {t.name for t in (await g.list_tools()).tools}
            # an admin approves it: the new bundle changes the agent's list, and the agent is told
            before = notes.count("notifications/tools/list_changed")
            world.next_version()
            surface_world(world, tools=[*SURFACE_TOOLS, "late_tool"])
            await wait_for(
                lambda: notes.count("notifications/tools/list_changed") > before,
                "tools/list_changed from the gateway",
            )
            assert "surface__late_tool" in {t.name for t in (await g.list_tools()).tools}
            assert (await g.call_tool("surface__late_tool", {})).content[0].text == "late_tool: hi"

    anyio.run(main)


def test_resource_subscriptions_and_updates_carry_the_prefixed_uri(world: World) -> None:
    surface_world(world)
    updated: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updated.append(message.params.uri)

    async def main() -> None:
        async with Client(world.gateway(), mode="legacy", message_handler=on_message) as g:
            await g.subscribe_resource("surface+test://static/readme")
            assert json.loads((markers(world) / "subscribed").read_text()) == ["test://static/readme"]
            with pytest.raises(MCPError):
                await g.subscribe_resource("surface+test://secret/prod-keys")  # forbidden: not even watched
            await g.call_tool("surface__touch", {"uri": "test://static/readme"})
            await wait_for(lambda: updated, "resources/updated")
            assert updated == ["surface+test://static/readme"]
            await g.unsubscribe_resource("surface+test://static/readme")
            assert json.loads((markers(world) / "subscribed").read_text()) == []

    anyio.run(main)


# --- requests of the upstream to the agent's side -----------------------------------------------------


def _sampling_agent(asked: list[types.CreateMessageRequestParams]):
    async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append(params)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(text="4"), model="agent-model"
        )

    return sampling


def test_sampling_is_denied_by_default_and_audited(world: World) -> None:
    surface_world(world)
    asked: list[types.CreateMessageRequestParams] = []

    async def main() -> None:
        async with Client(world.gateway(), mode="legacy", sampling_callback=_sampling_agent(asked)) as g:
            result = await g.call_tool("surface__ask_model", {"n": 500})
        assert result.is_error
        assert "refused by governance policy (server_request_denied)" in result.content[0].text
        assert "sampling is off" in result.content[0].text
        assert asked == []  # the agent's model was never asked
        events = audit(world, "sampling/createMessage")
        assert [(e["phase"], e["status"], e["trigger"], e["server"]) for e in events] == [
            ("intent", None, None, "surface"),
            ("result", "blocked", "server_request_denied", "surface"),
        ]
        assert "output_limit: 500" in events[0]["args_summary"]

    anyio.run(main)


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "sdk-path"])
def test_sampling_allowed_by_policy_is_capped_and_answered(world: World, fast_path: bool) -> None:
    surface_world(world, server_requests={"sampling": True, "sampling_max_tokens": 100})
    asked: list[types.CreateMessageRequestParams] = []

    async def main() -> None:
        async with Client(direct(world), mode="legacy", sampling_callback=_sampling_agent(asked)) as d:
            d_result = await d.call_tool("ask_model", {"n": 500})
        assert asked[-1].max_tokens == 500
        async with Client(
            world.gateway(fast_path=fast_path), mode="legacy", sampling_callback=_sampling_agent(asked)
        ) as g:
            result = await g.call_tool("surface__ask_model", {"n": 500})
        assert result.content == d_result.content
        assert result.content[0].text == "model said: 4 (model=agent-model)"
        assert asked[-1].max_tokens == 100  # capped by the bundle
        events = audit(world, "sampling/createMessage")
        assert [(e["phase"], e["status"]) for e in events] == [("intent", None), ("result", "success")]
        assert "agent-model" in events[1]["result_summary"]

    anyio.run(main)


def everything_world(world: World, server_requests: dict[str, Any]) -> None:
    doc = world.doc()
    doc["servers"]["everything"] = {
        "category": "other",
        "transport": "stdio",
        "command": str(EVERYTHING),
        "args": ["stdio"],
        "tools": {
            name: {"class": "read"}
            for name in (
                "echo",
                "get-resource-links",
                "trigger-sampling-request",
                "trigger-elicitation-request",
                "trigger-url-elicitation",
            )
        },
        "server_requests": server_requests,
    }
    doc["environment_policy"]["bindings"]["everything"] = {"target": "local", "permission": "read_only"}
    doc["roles"]["code_agent"]["allowed_servers"].append("everything")
    world.write_bundle(doc)
    world.write_config(
        servers=("time",), extra={"everything": {"command": str(EVERYTHING), "args": ["stdio"]}}
    )


def test_server_everything_sampling_and_url_elicitation_follow_the_policy(world: World) -> None:
    if not EVERYTHING.exists():
        pytest.fail(f"{EVERYTHING} is missing: run `npm install`")
    everything_world(world, {"sampling": True, "elicitation_url_domains": ["example.com"]})
    asked: list[types.CreateMessageRequestParams] = []
    elicited: list[Any] = []

    async def elicitation(ctx: Any, params: Any) -> types.ElicitResult:
        elicited.append(params)
        return types.ElicitResult(action="decline")

    async def main() -> None:
        async with Client(
            world.gateway(),
            mode="legacy",
            sampling_callback=_sampling_agent(asked),
            elicitation_callback=elicitation,
        ) as g:
            sampled = await g.call_tool(
                "everything__trigger-sampling-request", {"prompt": "2+2?", "maxTokens": 50}
            )
            assert not sampled.is_error, sampled.content
            assert "4" in json.dumps([c.model_dump() for c in sampled.content])
            assert asked and asked[-1].max_tokens == 50
            allowed = await g.call_tool(
                "everything__trigger-url-elicitation", {"url": "https://login.example.com/consent"}
            )
            assert len(elicited) == 1 and elicited[0].url == "https://login.example.com/consent", allowed
            refused = await g.call_tool(
                "everything__trigger-url-elicitation", {"url": "https://evil.example.net/x"}
            )
            assert len(elicited) == 1, refused  # never shown to the user
        results = [e for e in world.events() if e["phase"] == "result" and e["tool"] == "elicitation/create"]
        assert [(e["status"], e["trigger"]) for e in results] == [
            ("success", None),
            ("blocked", "server_request_denied"),
        ]
        assert "evil.example.net" in results[1]["result_summary"]

    anyio.run(main)


@contextlib.contextmanager
def http_gateway(world: World, *extra: str) -> Iterator[str]:
    """The gateway serving streamable HTTP on loopback (no agent auth); yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [PY, *world.gateway_args("--http", f"127.0.0.1:{port}", *extra)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=sys.stderr,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        wait_serving(proc, url, "legacy")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_serving(proc: subprocess.Popen[bytes], url: str, mode: str) -> None:
    """Until the MCP server ``proc`` answers ``tools/list`` at ``url`` (``mode``: the client's)."""

    async def serving() -> None:
        with anyio.fail_after(WAIT):
            while True:
                try:
                    async with Client(url, mode=mode) as probe:
                        await probe.list_tools()
                    return
                except Exception:
                    assert proc.poll() is None, f"{proc.args[0]} exited"
                    await anyio.sleep(0.2)

    anyio.run(serving)


def test_over_streamable_http_reads_progress_and_sampling_ride_the_agents_request(world: World) -> None:
    """On HTTP each agent request has its own stream: progress and the upstream's sampling request reach
    the agent on the stream of the call that caused them."""
    surface_world(world, server_requests={"sampling": True})
    asked: list[types.CreateMessageRequestParams] = []

    async def main(url: str) -> None:
        async with Client(url, mode="legacy", sampling_callback=_sampling_agent(asked)) as g:
            read = await g.read_resource("surface+test://item/7")
            assert read.contents[0].text == "item 7" and read.meta["io.mcpgov/run"]
            progress: list[float] = []

            async def cb(p: float, total: float | None, message: str | None) -> None:
                progress.append(p)

            await g.call_tool("surface__slow_progress", {"n": 3}, progress_callback=cb)
            assert progress == [1, 2, 3]
            sampled = await g.call_tool("surface__ask_model", {"n": 20})
            assert sampled.content[0].text == "model said: 4 (model=agent-model)"
            assert len(asked) == 1
            with pytest.raises(MCPError) as refused:
                await g.read_resource("surface+test://secret/prod-keys")
            assert refused.value.error.data == {"trigger": "production_environment"}

    with http_gateway(world) as url:
        anyio.run(main, url)
    assert [e["status"] for e in audit(world, "sampling/createMessage") if e["phase"] == "result"] == [
        "success"
    ]


def test_a_server_request_is_never_put_to_another_agent(world: World) -> None:
    """Two agents on one HTTP gateway share the upstream: while it serves both, its sampling request cannot
    be told apart (2025-11-25 requests name no call) and is refused, never asked of the other agent."""
    surface_world(world, server_requests={"sampling": True})
    asked_a: list[types.CreateMessageRequestParams] = []
    asked_b: list[types.CreateMessageRequestParams] = []

    async def main(url: str) -> None:
        async with (
            Client(url, mode="legacy", sampling_callback=_sampling_agent(asked_a)) as a,
            Client(url, mode="legacy", sampling_callback=_sampling_agent(asked_b)) as b,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(a.call_tool, "surface__wait_forever", {})
            await wait_for(lambda: audit(world, "wait_forever"), "agent A's call in flight")
            refused = await b.call_tool("surface__ask_model", {"n": 20})
            assert refused.is_error and "serving several agent sessions" in refused.content[0].text
            tg.cancel_scope.cancel()
        assert asked_a == [] and asked_b == []

    with http_gateway(world) as url:
        anyio.run(main, url)
    results = [e for e in audit(world, "sampling/createMessage") if e["phase"] == "result"]
    assert [(e["status"], e["trigger"]) for e in results] == [("blocked", "server_request_denied")]


def test_resource_links_in_tool_results_name_the_server_and_following_one_is_a_governed_read(
    world: World,
) -> None:
    if not EVERYTHING.exists():
        pytest.fail(f"{EVERYTHING} is missing: run `npm install`")
    everything_world(world, {})

    async def main() -> None:
        everything = StdioServerParameters(command=str(EVERYTHING), args=["stdio"])
        async with Client(everything, mode="legacy") as d:
            d_links = [
                c
                for c in (await d.call_tool("get-resource-links", {"count": 2})).content
                if c.type == "resource_link"
            ]
            d_read = await d.read_resource(d_links[0].uri)
        async with Client(world.gateway(), mode="legacy") as g:
            result = await g.call_tool("everything__get-resource-links", {"count": 2})
            links = [c for c in result.content if c.type == "resource_link"]
            assert [link.uri for link in links] == [f"everything+{link.uri}" for link in d_links]
            read = await g.read_resource(links[0].uri)
        # the dynamic resource embeds its creation time: same shape, same resource
        got, want = (
            read.contents[0].model_dump(exclude={"uri"}),
            d_read.contents[0].model_dump(exclude={"uri"}),
        )
        assert got.keys() == want.keys() and got["mime_type"] == want["mime_type"]
        assert (
            base64.b64decode(got["blob"]).split(b" created")[0]
            == base64.b64decode(want["blob"]).split(b" created")[0]
        )
        assert read.contents[0].uri == f"everything+{d_read.contents[0].uri}"
        reads = audit(world, "resources/read")
        assert [(e["phase"], e["status"]) for e in reads] == [("intent", None), ("result", "success")]
        assert d_links[0].uri in reads[0]["args_summary"]

    anyio.run(main)


def test_an_upstream_that_announces_list_changes_is_not_listed_again_at_every_tools_list(
    world: World,
) -> None:
    surface_world(world)
    lists = markers(world) / "lists"

    async def main() -> None:
        async with Client(world.gateway(), mode="legacy") as g:
            for _ in range(3):
                assert "surface__hello" in {t.name for t in (await g.list_tools()).tools}
            assert lists.read_text() == "1"  # at connect only: the cached list serves the agent
            await g.call_tool("surface__add_tool", {})  # list_changed: listed again
            await wait_for(lambda: lists.read_text() == "2", "the gateway listing the upstream again")

    anyio.run(main)


@pytest.mark.parametrize("roots", [True, False], ids=["roots-allowed", "roots-off"])
def test_roots_are_listed_to_the_server_only_when_its_policy_allows(world: World, roots: bool) -> None:
    surface_world(world, server_requests={"roots": roots})
    asked: list[bool] = []

    async def list_roots(ctx: Any) -> types.ListRootsResult:
        asked.append(True)
        return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])

    async def main() -> None:
        async with Client(world.gateway(), mode="legacy", list_roots_callback=list_roots) as g:
            result = await g.call_tool("surface__my_roots", {})
            await g.send_roots_list_changed()
            await g.send_ping()
        if roots:
            assert result.content[0].text == "file:///work/project" and asked
            await wait_for(lambda: (markers(world) / "roots_changed").exists(), "roots list_changed upstream")
        else:
            assert result.is_error and "roots is off" in result.content[0].text and not asked
        statuses = [(e["status"], e["trigger"]) for e in audit(world, "roots/list") if e["phase"] == "result"]
        assert statuses == ([("success", None)] if roots else [("blocked", "server_request_denied")])

    anyio.run(main)
