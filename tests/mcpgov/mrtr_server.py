"""A stdio MCP upstream that asks the agent's side for input the 2026-07-28 way (multi-round-trip requests):
its tools, resource templates (``mrtr://greeting/{name}``, ``mrtr://summary/{topic}``, ``mrtr://big/{n}``)
and prompt (``interview``) answer ``InputRequiredResult`` with sampling, elicitation (form and URL) and
roots requests, and finish on the retry that carries the answers and its echoed ``requestState``.

It records the requests it sees in ``$MRTR_MARKERS/calls`` (one line per round: tool, or resource/prompt
as ``greeting/<name>``, its state, the answers it got).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer

MARKERS = Path(os.environ.get("MRTR_MARKERS", "."))
server = MCPServer("mrtr")


def _seen(tool: str, ctx: Context) -> dict[str, Any]:
    answers = {
        k: v.model_dump(by_alias=True, mode="json", exclude_none=True)
        for k, v in (ctx.input_responses or {}).items()
    }
    with (MARKERS / "calls").open("a") as f:
        f.write(json.dumps({"tool": tool, "state": ctx.request_state, "answers": answers}) + "\n")
    return answers


def _sampling(question: str, max_tokens: int, tools: bool = False) -> types.CreateMessageRequest:
    params: dict[str, Any] = {
        "messages": [{"role": "user", "content": {"type": "text", "text": question}}],
        "maxTokens": max_tokens,
    }
    if tools:
        params["tools"] = [{"name": "lookup", "inputSchema": {"type": "object"}}]
    return types.CreateMessageRequest.model_validate({"method": "sampling/createMessage", "params": params})


def _form(message: str) -> types.ElicitRequest:
    return types.ElicitRequest.model_validate(
        {
            "method": "elicitation/create",
            "params": {
                "mode": "form",
                "message": message,
                "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}},
            },
        }
    )


def _who(answers: dict[str, Any]) -> str:
    """The name the user gave to the form question ``who``, or ``<action>`` when they did not accept."""
    who = answers.get("who") or {}
    return (
        (who.get("content") or {}).get("name") if who.get("action") == "accept" else f"<{who.get('action')}>"
    )


def _text(answer: dict[str, Any]) -> str:
    content = answer.get("content")
    return content.get("text", "") if isinstance(content, dict) else str(content)


@server.tool()
async def ask_model(question: str, max_tokens: int = 500, ctx: Context = None) -> Any:  # type: ignore[assignment]
    """Asks the agent's model (sampling) before answering."""
    answers = _seen("ask_model", ctx)
    if "model" not in answers:
        return types.InputRequiredResult(
            input_requests={"model": _sampling(question, max_tokens)}, request_state=f"asked:{question}"
        )
    return f"model said: {_text(answers['model'])} (state={ctx.request_state})"


@server.tool()
async def ask_model_with_tools(question: str, ctx: Context = None) -> Any:  # type: ignore[assignment]
    """Sampling with tools."""
    answers = _seen("ask_model_with_tools", ctx)
    if "model" not in answers:
        return types.InputRequiredResult(input_requests={"model": _sampling(question, 50, tools=True)})
    return f"model said: {_text(answers['model'])}"


@server.tool()
async def ask_user(message: str, ctx: Context = None) -> Any:  # type: ignore[assignment]
    """Asks the user a form question, then the model (two rounds)."""
    answers = _seen("ask_user", ctx)
    state = ctx.request_state or ""
    if not state:
        return types.InputRequiredResult(input_requests={"who": _form(message)}, request_state="round1")
    if state == "round1":
        name = _who(answers)
        return types.InputRequiredResult(
            input_requests={"greet": _sampling(f"greet {name}", 30)}, request_state=f"round2:{name}"
        )
    name = state.split(":", 1)[1]
    return f"user {name}; model said: {_text(answers.get('greet') or {})}"


@server.tool()
async def open_url(url: str, ctx: Context = None) -> Any:  # type: ignore[assignment]
    """Sends the user to a URL (URL-mode elicitation), then says what the user did."""
    answers = _seen("open_url", ctx)
    if "visit" not in answers:
        request = types.ElicitRequest.model_validate(
            {
                "method": "elicitation/create",
                "params": {"mode": "url", "message": "sign in", "url": url, "elicitationId": "e1"},
            }
        )
        return types.InputRequiredResult(input_requests={"visit": request}, request_state="url")
    return f"user action: {answers['visit'].get('action')}"


@server.tool()
async def ask_form_and_model(question: str, ctx: Context = None) -> Any:  # type: ignore[assignment]
    """One round with a form question and a sampling request; answers with what it got."""
    answers = _seen("ask_form_and_model", ctx)
    if not ctx.request_state:
        return types.InputRequiredResult(
            input_requests={"who": _form("name?"), "model": _sampling(question, 20)}, request_state="both"
        )
    who = answers.get("who") or {}
    return f"who={who.get('action')}:{(who.get('content') or {}).get('name')} model={_text(answers.get('model') or {})}"


@server.tool()
async def url_and_form(url: str, ctx: Context = None) -> Any:  # type: ignore[assignment]
    """One round with a URL-mode elicitation and a form question; answers with what it got for each."""
    answers = _seen("url_and_form", ctx)
    if not ctx.request_state:
        visit = types.ElicitRequest.model_validate(
            {
                "method": "elicitation/create",
                "params": {"mode": "url", "message": "sign in", "url": url, "elicitationId": "e2"},
            }
        )
        return types.InputRequiredResult(
            input_requests={"visit": visit, "who": _form("name?")}, request_state="uf"
        )
    return (
        f"visit={(answers.get('visit') or {}).get('action')} who={(answers.get('who') or {}).get('action')}"
    )


@server.tool()
async def my_roots(ctx: Context = None) -> Any:  # type: ignore[assignment]
    """Lists the agent's roots."""
    answers = _seen("my_roots", ctx)
    if "roots" not in answers:
        return types.InputRequiredResult(
            input_requests={"roots": types.ListRootsRequest.model_validate({"method": "roots/list"})},
            request_state="roots",
        )
    return "roots: " + ",".join(r["uri"] for r in answers["roots"].get("roots", []))


@server.tool()
async def plain(n: int = 1) -> str:
    """Asks nothing."""
    return f"plain {n}"


# resources/read and prompts/get may answer InputRequiredResult too (spec: Multi Round-Trip Requests)


@server.resource("mrtr://greeting/{name}")
async def greeting(name: str, ctx: Context) -> Any:
    """Asks the user who is reading (form elicitation) before the text."""
    answers = _seen(f"greeting/{name}", ctx)
    if "who" not in answers:
        return types.InputRequiredResult(
            input_requests={"who": _form("who reads?")}, request_state=f"g:{name}"
        )
    return f"hello {name}, read by {_who(answers)} (state={ctx.request_state})"


@server.resource("mrtr://summary/{topic}")
async def summary(topic: str, ctx: Context) -> Any:
    """Asks the agent's model (sampling) for a summary before the text."""
    answers = _seen(f"summary/{topic}", ctx)
    if "model" not in answers:
        return types.InputRequiredResult(
            input_requests={"model": _sampling(f"summarise {topic}", 500)}, request_state=f"s:{topic}"
        )
    return f"summary of {topic}: {_text(answers['model'])}"


@server.resource("mrtr://big/{n}")
async def big(n: str, ctx: Context) -> Any:
    """Asks a form question, then returns ``n`` bytes."""
    answers = _seen(f"big/{n}", ctx)
    if "who" not in answers:
        return types.InputRequiredResult(input_requests={"who": _form("who?")}, request_state="big")
    return "x" * int(n)


@server.prompt()
async def interview(topic: str, ctx: Context) -> Any:
    """Two rounds: asks the user who (form), then the model (sampling); then the prompt's message."""
    answers = _seen(f"interview/{topic}", ctx)
    state = ctx.request_state or ""
    if not state:
        return types.InputRequiredResult(input_requests={"who": _form("who?")}, request_state="p1")
    if state == "p1":
        name = _who(answers)
        return types.InputRequiredResult(
            input_requests={"model": _sampling(f"questions on {topic} for {name}", 30)},
            request_state=f"p2:{name}",
        )
    name = state.split(":", 1)[1]
    return f"Interview {name} about {topic}: {_text(answers.get('model') or {})}"


if __name__ == "__main__":
    server.run()
