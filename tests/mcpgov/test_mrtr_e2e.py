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
from tests.mcpgov.test_surface_e2e import http_gateway, surface_world

pytestmark = pytest.mark.slow

MRTR = Path(__file__).with_name("mrtr_server.py")
TOOLS = [
    "ask_model",
    "ask_model_with_tools",
    "ask_user",
    "open_url",
    "ask_form_and_model",
    "url_and_form",
    "my_roots",
    "plain",
]
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
        servers=(),
        extra={"mrtr": {"command": PY, "args": [str(MRTR)], "env": {"MRTR_MARKERS": str(markers(world))}}},
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
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(text="4"), model="agent-model"
        )

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
        assert (
            got
            == want
            == ["model said: 4 (state=asked:2+2?)", "user ann; model said: 4", "who=accept:ann model=4"]
        )
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


def test_refused_requests_never_reach_the_agent_and_the_upstream_hears_the_refusal(world: World) -> None:
    """Default policy: no sampling (the call ends, not retried upstream); URL elicitation only to allowlisted
    domains (declined by the gateway, the upstream carries on); roots off refuses roots."""
    mrtr_world(world, server_requests={"elicitation_url_domains": ["example.com"], "roots": False})

    async def main() -> None:
        agent = Agent()
        async with agent.client(gateway(world)) as g:
            sampled = await g.call_tool("mrtr__ask_model", {"question": "2+2?"})
            assert sampled.is_error
            text = sampled.content[0].text
            assert (
                "refused by governance policy (server_request_denied)" in text and "sampling is off" in text
            )
            away = await g.call_tool("mrtr__open_url", {"url": "https://evil.test/login"})
            assert away.content[0].text == "user action: decline"
            allowed = await g.call_tool("mrtr__open_url", {"url": "https://login.example.com/x"})
            assert allowed.content[0].text == "user action: accept"
            roots = await g.call_tool("mrtr__my_roots", {})
            assert roots.is_error and "roots is off" in roots.content[0].text
        # the agent was asked only the allowlisted URL
        assert [(kind, getattr(p, "url", None)) for kind, p in agent.asked] == [
            ("elicitation", "https://login.example.com/x")
        ]

    anyio.run(main)
    assert len(upstream_rounds(world, "ask_model")) == 1  # refused: the upstream is not asked again
    assert [r["answers"] for r in upstream_rounds(world, "open_url")] == [
        {},
        {"visit": {"action": "decline"}},
        {},
        {"visit": {"action": "accept", "content": {"name": "ann"}}},
    ]
    results = [e for e in world.events() if e["phase"] == "result" and "/" in e["tool"]]
    assert [(e["tool"], e["status"], e["trigger"]) for e in results] == [
        ("sampling/createMessage", "blocked", "server_request_denied"),
        ("elicitation/create", "blocked", "server_request_denied"),
        ("elicitation/create", "success", None),
        ("roots/list", "blocked", "server_request_denied"),
    ]


def test_a_2025_agent_is_asked_in_the_legacy_form_and_the_gateway_retries_the_upstream(world: World) -> None:
    mrtr_world(world, server_requests={"sampling": True})

    async def main() -> None:
        agent = Agent()
        async with agent.client(gateway(world), mode="legacy") as g:
            assert (await g.call_tool("mrtr__ask_user", {"message": "who?"})).content[0].text == (
                "user ann; model said: 4"
            )
            assert (await g.call_tool("mrtr__my_roots", {})).content[0].text == "roots: file:///work/a"
        assert [kind for kind, _ in agent.asked] == ["elicitation", "sampling", "roots"]

    anyio.run(main)
    assert [r["state"] for r in upstream_rounds(world, "ask_user")] == [None, "round1", "round2:ann"]


def test_a_retry_is_the_same_call_and_does_not_count_against_rate_limits(world: World) -> None:
    doc = mrtr_world(world, server_requests={"sampling": True})
    doc["rate_limits"]["per_server"]["mrtr"] = {"max_calls_per_session": 2}
    world.write_bundle(doc)

    async def main() -> None:
        agent = Agent()
        async with agent.client(gateway(world)) as g:
            # three rounds (two retries) and a one-round call: two calls, within the limit of two
            assert not (await g.call_tool("mrtr__ask_user", {"message": "who?"})).is_error
            assert not (await g.call_tool("mrtr__plain", {})).is_error
            third = await g.call_tool("mrtr__plain", {"n": 3})
            assert third.is_error and "rate_limit" in third.content[0].text

    anyio.run(main)


def test_the_gateways_state_cannot_be_tampered_with_replayed_or_moved(world: World) -> None:
    mrtr_world(world, server_requests={"sampling": True})
    answer = {"model": {"role": "assistant", "content": {"type": "text", "text": "4"}, "model": "m"}}
    run_a, run_b = {"io.mcpgov/run": "run-a"}, {"io.mcpgov/run": "run-b"}

    async def refused(s: Any, name: str, args: dict[str, Any], state: str, meta: dict[str, Any]) -> None:
        with pytest.raises(MCPError) as exc:
            await s.call_tool(
                name, args, input_responses=answer, request_state=state, meta=meta, allow_input_required=True
            )
        assert exc.value.error.code == types.INVALID_PARAMS
        assert exc.value.error.message == "Invalid or expired requestState"

    async def main(url: str) -> None:
        async with Agent().client(url) as g:
            s = g.session
            first = await s.call_tool(
                "mrtr__ask_model", {"question": "a"}, meta=run_a, allow_input_required=True
            )
            assert isinstance(first, types.InputRequiredResult)
            state = first.request_state
            assert state and "asked:a" not in state  # the upstream's state travels sealed
            tampered = state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")
            await refused(s, "mrtr__ask_model", {"question": "a"}, tampered, run_a)
            # another tool, other arguments, another governance session: refused
            await refused(s, "mrtr__ask_model_with_tools", {"question": "a"}, state, run_a)
            await refused(s, "mrtr__ask_model", {"question": "rm -rf /"}, state, run_a)
            await refused(s, "mrtr__ask_model", {"question": "a"}, state, run_b)
            done = await s.call_tool(
                "mrtr__ask_model",
                {"question": "a"},
                input_responses=answer,
                request_state=state,
                meta=run_a,
                allow_input_required=True,
            )
            assert done.content[0].text == "model said: 4 (state=asked:a)"
            await refused(s, "mrtr__ask_model", {"question": "a"}, state, run_a)  # redeemed once

    with http_gateway(world, "--upstream-mode", MODERN) as url:
        anyio.run(main, url)
    assert [r["answers"] != {} for r in upstream_rounds(world, "ask_model")] == [False, True]
    refusals = [e for e in world.events() if e["status"] == "blocked"]
    assert sorted(e["tool"] for e in refusals) == ["ask_model"] * 4 + ["ask_model_with_tools"]
    assert all(e["result_summary"].startswith("retry refused: requestState") for e in refusals)


def test_an_approval_wait_is_asked_as_rounds_of_a_2026_agent_not_held_open(world: World, portal) -> None:
    doc = mrtr_world(world, tools={"plain": {"class": "read", "approval_required": True}})
    world.publish(portal, doc)
    asked: list[str] = []

    def decide_when_asked(decision: str) -> None:
        def pending() -> list[dict[str, Any]]:
            return [
                e
                for evs in portal.events.values()
                for e in evs
                if e["trigger"] == "approval_required" and e["phase"] == "intent" and e["call_id"] not in done
            ]

        assert portal.wait_for(lambda: bool(pending()), timeout=30)
        ev = pending()[0]
        done.add(ev["call_id"])
        portal.approve(next(iter(portal.sessions)), ev["call_id"], decision)

    done: set[str] = set()

    async def in_thread(fn: Any, *args: Any) -> None:
        await anyio.to_thread.run_sync(fn, *args)

    async def main() -> None:
        agent = Agent()

        async def user(ctx: Any, params: Any) -> types.ElicitResult:
            asked.append(params.message)
            return types.ElicitResult(action="decline" if "withdraw-me" in str(asked[-1:]) else "accept")

        agent.elicitation = user  # type: ignore[method-assign]
        async with agent.client(gateway(world, portal=portal)) as g:
            async with anyio.create_task_group() as tg:
                tg.start_soon(in_thread, decide_when_asked, "approve")
                approved = await g.call_tool("mrtr__plain", {"n": 7})
            assert approved.content[0].text == "plain 7"
            async with anyio.create_task_group() as tg:
                tg.start_soon(in_thread, decide_when_asked, "deny")
                denied = await g.call_tool("mrtr__plain", {"n": 8})
            assert denied.is_error and "Approval denied by" in denied.content[0].text
            # with the round in hand, the agent retries as it likes: the state is the call's, once
            first = await g.session.call_tool("mrtr__plain", {"n": 9}, allow_input_required=True)
            assert isinstance(first, types.InputRequiredResult)
            assert (
                "needs the approval of a person" in first.input_requests["io.mcpgov/approval"].params.message
            )
            withdrawn = await g.session.call_tool(
                "mrtr__plain",
                {"n": 9},
                input_responses={"io.mcpgov/approval": types.ElicitResult(action="decline")},
                request_state=first.request_state,
                allow_input_required=True,
            )
            assert withdrawn.is_error and "Withdrawn by the agent's user" in withdrawn.content[0].text
        assert asked and all("needs the approval of a person in the governance portal" in m for m in asked)

    anyio.run(main)
    results = [e for e in audit(world, "plain") if e["phase"] == "result"]
    assert results[0]["result_summary"] == "plain 7"
    assert [(e["status"], e["trigger"]) for e in results] == [
        ("success", None),
        ("blocked", "approval_required"),
        ("blocked", "approval_required"),
    ]
    intents = [e for e in audit(world, "plain") if e["phase"] == "intent"]
    assert len(intents) == 3  # one INTENT per call, however many rounds it took


def test_a_2026_agent_is_asked_in_rounds_what_a_legacy_upstream_asks_mid_call(world: World) -> None:
    """The legacy upstream's sampling request cannot ride a stateless request: the call stays in flight at the
    gateway, the request is put to the agent as a round, and the agent's retry brings the answer back."""
    surface_world(world, server_requests={"sampling": True, "sampling_max_tokens": 100})

    async def main() -> None:
        agent = Agent()
        async with agent.client(world.gateway()) as g:
            sampled = await g.call_tool("surface__ask_model", {"n": 500})
            assert sampled.content[0].text == "model said: 4 (model=agent-model)"
            assert (await g.call_tool("surface__hello", {})).content[0].text.startswith("hello")
        assert [(kind, p.max_tokens) for kind, p in agent.asked] == [("sampling", 100)]

    anyio.run(main)
    calls = audit(world, "ask_model")
    assert [(e["phase"], e["status"]) for e in calls] == [("intent", None), ("result", "success")]
    sampling = [(e["phase"], e["status"]) for e in audit(world, "sampling/createMessage")]
    assert sampling == [("intent", None), ("result", "success")]


def test_a_legacy_upstreams_refused_request_never_reaches_a_2026_agent(world: World) -> None:
    surface_world(world)  # default: no sampling

    async def main() -> None:
        agent = Agent()
        async with agent.client(world.gateway()) as g:
            result = await g.call_tool("surface__ask_model", {"n": 5})
        assert result.is_error and "sampling is off" in result.content[0].text
        assert agent.asked == []

    anyio.run(main)


def test_a_retry_after_the_session_halted_is_refused_and_never_reaches_the_upstream(world: World) -> None:
    mrtr_world(world, server_requests={"sampling": True})
    answer = {
        "model": types.CreateMessageResult(role="assistant", content=types.TextContent(text="4"), model="m")
    }

    async def main() -> None:
        async with Agent().client(gateway(world)) as g:
            first = await g.session.call_tool("mrtr__ask_model", {"question": "a"}, allow_input_required=True)
            assert isinstance(first, types.InputRequiredResult)
            halted = await g.call_tool("shell__run", {"cmd": "ls"})  # trigger 1: the session halts
            assert halted.is_error and "unauthorized_server" in halted.content[0].text
            retry = await g.session.call_tool(
                "mrtr__ask_model",
                {"question": "a"},
                input_responses=answer,
                request_state=first.request_state,
                allow_input_required=True,
            )
            assert retry.is_error and "This session is halted" in retry.content[0].text

    anyio.run(main)
    assert len(upstream_rounds(world, "ask_model")) == 1
    assert [(e["status"], e["trigger"]) for e in audit(world, "ask_model") if e["phase"] == "result"] == [
        ("success", None),
        ("blocked", "session_halted"),
    ]


def test_progress_and_cancellation_of_a_2026_agents_call_in_flight_reach_as_before(world: World) -> None:
    surface_world(world)  # the default policy lets the legacy upstream elicit: its calls are in flight

    async def main() -> None:
        async with Agent().client(world.gateway()) as g:
            progress: list[float] = []

            async def cb(p: float, total: float | None, message: str | None) -> None:
                progress.append(p)

            result = await g.call_tool("surface__slow_progress", {"n": 3}, progress_callback=cb)
            assert not result.is_error and progress == [1, 2, 3]
            with anyio.move_on_after(2):
                await g.call_tool("surface__wait_forever", {})
            with anyio.fail_after(60):
                while not (world.base / "markers" / "cancelled").exists():
                    await anyio.sleep(0.05)

    anyio.run(main)
    waits = audit(world, "wait_forever")
    assert [(e["phase"], e["status"]) for e in waits] == [("intent", None), ("result", "fail")]


def test_an_agent_cannot_answer_a_question_the_gateway_declined_for_it(world: World) -> None:
    """A round with a refused URL elicitation and an allowed form question: the agent is shown the form only,
    and an answer it adds for the refused one is dropped (the upstream hears the gateway's decline)."""
    mrtr_world(world)

    async def main() -> None:
        async with Agent().client(gateway(world)) as g:
            first = await g.session.call_tool(
                "mrtr__url_and_form", {"url": "https://evil.test/x"}, allow_input_required=True
            )
            assert isinstance(first, types.InputRequiredResult), first
            assert list(first.input_requests) == ["who"]
            smuggled = {
                "who": types.ElicitResult(action="accept", content={"name": "ann"}),
                "visit": types.ElicitResult(action="accept"),
                "extra": types.ElicitResult(action="accept"),
            }
            done = await g.session.call_tool(
                "mrtr__url_and_form",
                {"url": "https://evil.test/x"},
                input_responses=smuggled,
                request_state=first.request_state,
                allow_input_required=True,
            )
            assert done.content[0].text == "visit=decline who=accept"

    anyio.run(main)
    assert upstream_rounds(world, "url_and_form")[1]["answers"] == {
        "visit": {"action": "decline"},
        "who": {"action": "accept", "content": {"name": "ann"}},
    }


# resources/read and prompts/get in rounds: one governed read, its rounds bound to it by the sealed state

GREETING, SUMMARY = "mrtr+mrtr://greeting/bob", "mrtr+mrtr://summary/tides"
SAMPLING_ANSWER = {"model": {"role": "assistant", "content": {"type": "text", "text": "4"}, "model": "m"}}
FORM_ANSWER = {"who": {"action": "accept", "content": {"name": "ann"}}}


def reads(world: World) -> list[tuple[str, str | None, str | None]]:
    """The governed reads' audit events: (phase, status, trigger)."""
    return [
        (e["phase"], e["status"], e["trigger"])
        for e in world.events()
        if e["tool"] in ("resources/read", "prompts/get")
    ]


def test_resource_and_prompt_rounds_work_through_the_gateway_as_directly_and_are_audited(
    world: World,
) -> None:
    mrtr_world(world, server_requests={"sampling": True, "sampling_max_tokens": 100})

    async def texts(c: Client, prefix: str, sep: str) -> list[str]:
        greeting = await c.read_resource(f"{prefix}mrtr://greeting/bob")
        summary = await c.read_resource(f"{prefix}mrtr://summary/tides")
        prompt = await c.get_prompt(f"{sep}interview", {"topic": "tides"})
        return [greeting.contents[0].text, summary.contents[0].text, prompt.messages[0].content.text]

    async def main() -> None:
        async with Agent().client(direct(world)) as d:
            want = await texts(d, "", "")
        agent = Agent()
        async with agent.client(gateway(world)) as g:
            got = await texts(g, "mrtr+", "mrtr__")
        assert (
            got
            == want
            == [
                "hello bob, read by ann (state=g:bob)",
                "summary of tides: 4",
                "Interview ann about tides: 4",
            ]
        )
        # what the agent was asked, in order, with the policy's cap on the model's output
        assert [kind for kind, _ in agent.asked] == ["elicitation", "sampling", "elicitation", "sampling"]
        assert agent.asked[1][1].max_tokens == 100

    anyio.run(main)
    # one INTENT and one RESULT per logical read, however many rounds it took (the prompt: three)
    assert reads(world) == [("intent", None, None), ("result", "success", None)] * 3
    summaries = [e for e in world.events() if e["tool"] == "resources/read" and e["phase"] == "result"]
    assert summaries[0]["result_summary"] == "hello bob, read by ann (state=g:bob)"
    # each round's request audited as its own event, under the asking server
    asked = [
        (e["tool"], e["phase"], e["status"], e["server"])
        for e in world.events()
        if e["tool"] in ("elicitation/create", "sampling/createMessage")
    ]
    assert asked == [
        ("elicitation/create", "intent", None, "mrtr"),
        ("elicitation/create", "result", "success", "mrtr"),
        ("sampling/createMessage", "intent", None, "mrtr"),
        ("sampling/createMessage", "result", "success", "mrtr"),
        ("elicitation/create", "intent", None, "mrtr"),
        ("elicitation/create", "result", "success", "mrtr"),
        ("sampling/createMessage", "intent", None, "mrtr"),
        ("sampling/createMessage", "result", "success", "mrtr"),
    ]
    # directly, then through the gateway: the same three rounds
    assert [r["state"] for r in upstream_rounds(world, "interview/tides")] == [None, "p1", "p2:ann"] * 2


def test_a_refused_request_ends_the_read_and_never_reaches_the_agent(world: World) -> None:
    """Default policy: no sampling. The read ends with the refusal (a JSON-RPC error naming the trigger), the
    upstream is not asked again, the session goes on; a declined question lets the read carry on."""
    mrtr_world(world, server_requests={"elicitation": False})

    async def main() -> None:
        agent = Agent()
        async with agent.client(gateway(world)) as g:
            with pytest.raises(MCPError) as refused:
                await g.read_resource(SUMMARY)
            assert refused.value.error.code == -32004
            assert "refused by governance policy (server_request_denied)" in refused.value.error.message
            assert "sampling is off" in refused.value.error.message
            assert (refused.value.error.data or {}).get("trigger") == "server_request_denied"
            # elicitation off: the gateway declines on the user's behalf, the upstream finishes the read
            declined = await g.read_resource(GREETING)
            assert declined.contents[0].text == "hello bob, read by <decline> (state=g:bob)"
            with pytest.raises(MCPError) as prompt:
                await g.get_prompt("mrtr__interview", {"topic": "tides"})  # declined, then sampling: refused
            assert "sampling is off" in prompt.value.error.message
        assert agent.asked == []

    anyio.run(main)
    assert len(upstream_rounds(world, "summary/tides")) == 1
    assert [r["answers"] for r in upstream_rounds(world, "greeting/bob")] == [
        {},
        {"who": {"action": "decline"}},
    ]
    assert reads(world) == [
        ("intent", None, None),
        ("result", "blocked", "server_request_denied"),
        ("intent", None, None),
        ("result", "success", None),
        ("intent", None, None),
        ("result", "blocked", "server_request_denied"),
    ]


def test_a_read_in_rounds_counts_once_and_its_large_result_is_withheld_at_its_end(world: World) -> None:
    doc = mrtr_world(world, server_requests={"sampling": True})
    doc["rate_limits"]["per_server"]["mrtr"] = {"max_calls_per_session": 3}
    world.write_bundle(doc)

    async def main() -> None:
        async with Agent().client(gateway(world)) as g:
            # a two-round read and a three-round prompt: two requests of the limit of three
            assert (await g.read_resource(GREETING)).contents[0].text.startswith("hello bob")
            assert (await g.get_prompt("mrtr__interview", {"topic": "t"})).messages
            with pytest.raises(MCPError) as big:  # the third: its result, after its round, is over the limit
                await g.read_resource("mrtr+mrtr://big/1100000")
            assert "large_data_return" in big.value.error.message
            with pytest.raises(MCPError) as halted:
                await g.read_resource(GREETING)
            assert "halted" in halted.value.error.message

    anyio.run(main)
    results = [(s, t) for p, s, t in reads(world) if p == "result"]
    assert results == [
        ("success", None),
        ("success", None),
        ("blocked", "large_data_return"),
        ("blocked", "session_halted"),
    ]


def test_a_rate_limit_counts_a_read_in_rounds_once(world: World) -> None:
    doc = mrtr_world(world, server_requests={"sampling": True})
    doc["rate_limits"]["per_server"]["mrtr"] = {"max_calls_per_session": 1}
    world.write_bundle(doc)

    async def main() -> None:
        async with Agent().client(gateway(world)) as g:
            assert (
                await g.get_prompt("mrtr__interview", {"topic": "t"})
            ).messages  # three rounds, one request
            with pytest.raises(MCPError) as limited:
                await g.read_resource(GREETING)
            assert "rate_limit" in limited.value.error.message

    anyio.run(main)
    assert len(upstream_rounds(world, "greeting/bob")) == 0


def test_a_reads_state_cannot_be_tampered_with_replayed_or_moved(world: World) -> None:
    """The state of a read's round opens once, for that session, method, URI (or prompt and arguments)."""
    mrtr_world(world, server_requests={"sampling": True})
    run_a, run_b = {"io.mcpgov/run": "run-a"}, {"io.mcpgov/run": "run-b"}

    async def refused(call: Any) -> None:
        with pytest.raises(MCPError) as exc:
            await call
        assert exc.value.error.code == types.INVALID_PARAMS
        assert exc.value.error.message == "Invalid or expired requestState"

    async def main(url: str) -> None:
        async with Agent().client(url) as g:
            s = g.session

            def read(uri: str, state: str, meta: dict[str, Any] = run_a, answer: Any = FORM_ANSWER) -> Any:
                return s.read_resource(
                    uri, input_responses=answer, request_state=state, meta=meta, allow_input_required=True
                )

            first = await s.read_resource(GREETING, meta=run_a, allow_input_required=True)
            assert isinstance(first, types.InputRequiredResult)
            state = first.request_state
            assert state and "g:bob" not in state  # the upstream's state travels sealed
            await refused(read(GREETING, state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")))
            await refused(
                read("mrtr+mrtr://greeting/prod-admin", state)
            )  # another URI (even a forbidden one)
            await refused(read(GREETING, state, run_b))  # another governance session
            await refused(  # another method: a tools/call, a prompts/get
                s.call_tool(
                    "mrtr__ask_model",
                    {"question": "a"},
                    input_responses=SAMPLING_ANSWER,
                    request_state=state,
                    meta=run_a,
                    allow_input_required=True,
                )
            )
            await refused(
                s.get_prompt(
                    "mrtr__interview",
                    {"topic": "t"},
                    input_responses=FORM_ANSWER,
                    request_state=state,
                    meta=run_a,
                    allow_input_required=True,
                )
            )
            done = await read(GREETING, state)
            assert done.contents[0].text == "hello bob, read by ann (state=g:bob)"
            await refused(read(GREETING, state))  # redeemed once: a replay (or a copy) is refused
            # and a call's state cannot continue a read
            call = await s.call_tool(
                "mrtr__ask_model", {"question": "a"}, meta=run_a, allow_input_required=True
            )
            assert isinstance(call, types.InputRequiredResult)
            await refused(read(GREETING, call.request_state))
            # a prompt's state is bound to its arguments, and each round's state opens once: the first
            # round's state replayed while the prompt waits in its second round is refused
            p1 = await s.get_prompt("mrtr__interview", {"topic": "t"}, meta=run_a, allow_input_required=True)
            assert isinstance(p1, types.InputRequiredResult)

            def prompt(topic: str, state: str) -> Any:
                return s.get_prompt(
                    "mrtr__interview",
                    {"topic": topic},
                    input_responses=FORM_ANSWER,
                    request_state=state,
                    meta=run_a,
                    allow_input_required=True,
                )

            await refused(prompt("other", p1.request_state))
            p2 = await prompt("t", p1.request_state)
            assert isinstance(p2, types.InputRequiredResult) and list(p2.input_requests) == ["model"]
            await refused(prompt("t", p1.request_state))

    with http_gateway(world, "--upstream-mode", MODERN) as url:
        anyio.run(main, url)
    # the upstream saw the first round and the one good retry of the read, nothing of the refused ones
    assert [r["answers"] != {} for r in upstream_rounds(world, "greeting/bob")] == [False, True]
    assert upstream_rounds(world, "greeting/prod-admin") == []
    assert len(upstream_rounds(world, "interview/other")) == 0
    refusals = [e for e in world.events() if e["status"] == "blocked"]
    assert all(e["result_summary"].startswith("retry refused: requestState") for e in refusals)
    assert sorted(e["tool"] for e in refusals) == ["ask_model"] + ["prompts/get"] * 3 + ["resources/read"] * 5
    assert [r["state"] for r in upstream_rounds(world, "interview/t")] == [None, "p1"]


def test_a_2025_agent_reads_in_one_request_the_gateway_asks_it_and_retries(world: World) -> None:
    mrtr_world(world, server_requests={"sampling": True})

    async def main() -> None:
        agent = Agent()
        async with agent.client(gateway(world), mode="legacy") as g:
            assert (await g.read_resource(GREETING)).contents[
                0
            ].text == "hello bob, read by ann (state=g:bob)"
            prompt = await g.get_prompt("mrtr__interview", {"topic": "tides"})
            assert prompt.messages[0].content.text == "Interview ann about tides: 4"
        assert [kind for kind, _ in agent.asked] == ["elicitation", "elicitation", "sampling"]

    anyio.run(main)
    assert reads(world) == [("intent", None, None), ("result", "success", None)] * 2
    assert [r["state"] for r in upstream_rounds(world, "interview/tides")] == [None, "p1", "p2:ann"]


def test_a_reads_retry_after_the_session_halted_is_refused_and_never_reaches_the_upstream(
    world: World,
) -> None:
    mrtr_world(world)

    async def main() -> None:
        async with Agent().client(gateway(world)) as g:
            first = await g.session.read_resource(GREETING, allow_input_required=True)
            assert isinstance(first, types.InputRequiredResult)
            halted = await g.call_tool("shell__run", {"cmd": "ls"})  # trigger 1: the session halts
            assert halted.is_error and "unauthorized_server" in halted.content[0].text
            with pytest.raises(MCPError) as retry:
                await g.session.read_resource(
                    GREETING,
                    input_responses=FORM_ANSWER,
                    request_state=first.request_state,
                    allow_input_required=True,
                )
            assert "This session is halted" in retry.value.error.message

    anyio.run(main)
    assert len(upstream_rounds(world, "greeting/bob")) == 1
    assert reads(world) == [("intent", None, None), ("result", "blocked", "session_halted")]


def test_a_legacy_upstreams_request_during_a_read_reaches_a_2025_agent_and_is_refused_clearly_for_a_2026_one(
    world: World,
) -> None:
    """Only a tools/call of a 2026-07-28 agent is kept in flight as rounds; a 2025-11-25 server's sampling
    request during its read has no way to the agent and is refused with a reason, never sent to it."""
    surface_world(world, server_requests={"sampling": True})

    async def main() -> None:
        legacy = Agent()
        async with legacy.client(world.gateway(), mode="legacy") as g:
            assert (await g.read_resource("surface+test://asks")).contents[0].text == "model said: 4"
        assert [kind for kind, _ in legacy.asked] == ["sampling"]
        modern = Agent()
        async with modern.client(world.gateway()) as g:
            text = (await g.read_resource("surface+test://asks")).contents[0].text
        assert text.startswith(
            "sampling refused: MCP request refused by governance policy (server_request_denied)"
        )
        assert "cannot be put to the agent" in text
        assert modern.asked == []

    anyio.run(main)
    # two sessions (two spools): the legacy agent's request answered, the 2026-07-28 agent's refused
    results = [e["status"] for e in audit(world, "sampling/createMessage") if e["phase"] == "result"]
    assert sorted(results) == ["blocked", "success"]


def test_an_expired_state_is_refused_and_a_round_never_retried_is_closed_in_the_audit(world: World) -> None:
    """MCPGOV_STATE_TTL shortens the states' lifetime (here 1 s): a round the agent leaves is closed when
    its state expires (the read's one INTENT and the asked requests' INTENTs get RESULT fail), and the
    late retry is refused, for a read as for a call."""
    mrtr_world(world, server_requests={"sampling": True})
    params = gateway(world)
    params.env = {**(params.env or {}), "MCPGOV_STATE_TTL": "1"}

    def closed() -> list[dict[str, Any]]:
        return [
            e for e in world.events() if e["phase"] == "result" and "did not retry" in e["result_summary"]
        ]

    async def main() -> None:
        async with Agent().client(params) as g:
            read = await g.session.read_resource(GREETING, allow_input_required=True)
            call = await g.session.call_tool("mrtr__ask_model", {"question": "a"}, allow_input_required=True)
            assert isinstance(read, types.InputRequiredResult) and isinstance(call, types.InputRequiredResult)
            with anyio.fail_after(60):  # the gateway's sweep runs every half second
                while len(closed()) < 3:
                    await anyio.sleep(0.2)
            with pytest.raises(MCPError) as late_read:
                await g.session.read_resource(
                    GREETING,
                    input_responses=FORM_ANSWER,
                    request_state=read.request_state,
                    allow_input_required=True,
                )
            assert late_read.value.error.message == "Invalid or expired requestState"
            with pytest.raises(MCPError) as late_call:
                await g.session.call_tool(
                    "mrtr__ask_model",
                    {"question": "a"},
                    input_responses=SAMPLING_ANSWER,
                    request_state=call.request_state,
                    allow_input_required=True,
                )
            assert late_call.value.error.message == "Invalid or expired requestState"

    anyio.run(main)
    assert sorted((e["tool"], e["status"]) for e in closed()) == [
        ("elicitation/create", "fail"),
        ("resources/read", "fail"),
        ("sampling/createMessage", "fail"),
    ]
    refused = [e for e in world.events() if e["status"] == "blocked"]
    assert sorted((e["tool"], e["result_summary"]) for e in refused) == [
        ("ask_model", "retry refused: requestState expired"),
        ("resources/read", "retry refused: requestState expired"),
    ]
    assert len(upstream_rounds(world, "greeting/bob")) == 1 and len(upstream_rounds(world, "ask_model")) == 1
