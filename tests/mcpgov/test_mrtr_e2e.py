"""2026-07-28 multi-round-trip requests through the real gateway: an SDK ``MCPServer`` upstream whose tools
answer ``InputRequiredResult`` (``mrtr_server.py``) and the official SDK client as the agent.

Each round works through the gateway as it does directly; what the server's policy refuses never reaches
the agent; the gateway's sealed ``requestState`` cannot be tampered with, replayed, moved to another
session or used for another tool or other arguments; each round is audited.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from tests.mcpgov.conftest import PY, World

pytestmark = pytest.mark.slow

MRTR = Path(__file__).with_name("mrtr_server.py")
TOOLS = ["ask_model", "ask_model_with_tools", "ask_user", "open_url", "ask_form_and_model", "my_roots", "plain"]
MODERN = "2026-07-28"


def markers(world: World) -> Path:
    path = world.base / "markers"
    path.mkdir(exist_ok=True)
    return path


def mrtr_world(
    world: World, server_requests: dict[str, Any] | None = None, tools: dict[str, Any] | None = None
) -> dict[str, Any]:
    doc = world.doc()
    doc["servers"]["mrtr"] = {
        "category": "other",
        "transport": "stdio",
        "command": PY,
        "args": [str(MRTR)],
        "tools": {name: {"class": "read"} for name in TOOLS} | (tools or {}),
    }
    if server_requests is not None:
        doc["servers"]["mrtr"]["server_requests"] = server_requests
    doc["environment_policy"]["bindings"]["mrtr"] = {"target": "local", "permission": "read_only"}
    doc["roles"]["code_agent"]["allowed_servers"].append("mrtr")
    world.write_bundle(doc)
    world.write_config(
        servers=(), extra={"mrtr": {"command": PY, "args": [str(MRTR)], "env": {"MRTR_MARKERS": str(markers(world))}}}
    )
    return doc


def direct(world: World) -> StdioServerParameters:
    return StdioServerParameters(command=PY, args=[str(MRTR)], env={"MRTR_MARKERS": str(markers(world))})


def gateway(world: World, *extra: str, **kw: Any) -> StdioServerParameters:
    return world.gateway("--upstream-mode", MODERN, *extra, **kw)


class Agent:
    """The agent's side: its model and its user, answering what they are asked (and remembering it)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, Any]] = []

    async def sampling(self, ctx: Any, params: types.CreateMessageRequestParams) -> Any:
        self.asked.append(("sampling", params))
        return types.CreateMessageResult(role="assistant", content=types.TextContent(text="4"), model="agent-model")

    async def elicitation(self, ctx: Any, params: Any) -> types.ElicitResult:
        self.asked.append(("elicitation", params))
        return types.ElicitResult(action="accept", content={"name": "ann"})

    async def roots(self, ctx: Any) -> types.ListRootsResult:
        self.asked.append(("roots", None))
        return types.ListRootsResult(roots=[types.Root(uri="file:///work/a")])

    def client(self, target: Any, mode: str = MODERN) -> Client:
        return Client(
            target,
            mode=mode,
            sampling_callback=self.sampling,
            elicitation_callback=self.elicitation,
            list_roots_callback=self.roots,
        )


def audit(world: World, tool: str) -> list[dict[str, Any]]:
    return [e for e in world.events() if e["tool"] == tool]


def upstream_rounds(world: World, tool: str) -> list[dict[str, Any]]:
    path = markers(world) / "calls"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in (json.loads(line) for line in lines) if r["tool"] == tool]


def test_rounds_work_through_the_gateway_as_directly_and_are_audited(world: World) -> None:
    mrtr_world(world, server_requests={"sampling": True, "sampling_max_tokens": 100})

    async def main() -> None:
        agent = Agent()
        async with agent.client(direct(world)) as d:
            want = [
                (await d.call_tool("ask_model", {"question": "2+2?"})).content[0].text,
                (await d.call_tool("ask_user", {"message": "who?"})).content[0].text,
                (await d.call_tool("ask_form_and_model", {"question": "q"})).content[0].text,
            ]
        agent = Agent()
        async with agent.client(gateway(world)) as g:
            got = [
                (await g.call_tool("mrtr__ask_model", {"question": "2+2?"})).content[0].text,
                (await g.call_tool("mrtr__ask_user", {"message": "who?"})).content[0].text,
                (await g.call_tool("mrtr__ask_form_and_model", {"question": "q"})).content[0].text,
            ]
        assert got == want == ["model said: 4 (state=asked:2+2?)", "user ann; model said: 4", "who=accept:ann model=4"]
        # the cap of the policy reached the agent's model: maxTokens 500 asked, 100 put to the agent
        assert agent.asked[0][0] == "sampling" and agent.asked[0][1].max_tokens == 100

    anyio.run(main)
    calls = audit(world, "ask_model")
    assert [(e["phase"], e["status"]) for e in calls] == [
        ("intent", None),
        ("result", "success"),
        ("intent", None),
        ("result", "success"),
    ]
    assert calls[1]["result_summary"].startswith("input required (round 1; model: sampling/createMessage)")
    assert calls[3]["result_summary"] == "model said: 4 (state=asked:2+2?)"
    sampling = audit(world, "sampling/createMessage")
    assert [(e["phase"], e["status"], e["server"]) for e in sampling][:2] == [
        ("intent", None, "mrtr"),
        ("result", "success", "mrtr"),
    ]
    assert "output_limit: 500" in sampling[0]["args_summary"]
    assert "model=agent-model" in sampling[1]["result_summary"]
    assert [e["status"] for e in audit(world, "elicitation/create") if e["phase"] == "result"] == [
        "success",
        "success",
    ]
