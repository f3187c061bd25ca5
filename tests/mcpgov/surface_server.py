"""A stdio MCP upstream for the surface tests: resources (static, templated, subscribable), prompts,
completion, logging, progress, a tool added at run time with ``tools/list_changed``, sampling requests (at
once, or after a delay), a tool that sleeps,
and a tool that waits until it is cancelled (it writes ``$SURFACE_MARKERS/cancelled`` when it is).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata

MARKERS = Path(os.environ.get("SURFACE_MARKERS", "."))
BIG = "x" * (2 * 1024 * 1024)
STATE: dict[str, Any] = {"late": False, "level": None, "subscribed": []}

README = "readme text of the surface server"


def _tool(name: str, read: bool = True) -> types.Tool:
    return types.Tool(
        name=name,
        description=f"{name} (surface test tool)",
        input_schema={"type": "object", "properties": {"n": {"type": "integer"}, "uri": {"type": "string"}}},
        annotations=types.ToolAnnotations(read_only_hint=read, destructive_hint=not read),
    )


TOOLS = [
    "hello",
    "slow_progress",
    "add_tool",
    "ask_model",
    "log_something",
    "touch",
    "wait_forever",
    "my_roots",
    "ask_model_later",
    "sleep",
]


def _text(text: str, error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=error)


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    STATE["lists"] = STATE.get("lists", 0) + 1
    (MARKERS / "lists").write_text(str(STATE["lists"]))
    names = TOOLS + (["late_tool"] if STATE["late"] else [])
    return types.ListToolsResult(tools=[_tool(n) for n in names])


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    args = params.arguments or {}
    name = params.name
    if name in ("hello", "late_tool"):
        return _text(f"{name}: hi")
    if name == "slow_progress":
        n = int(args.get("n") or 3)
        for i in range(1, n + 1):
            await ctx.session.report_progress(i, n, f"step {i}")
        return _text(f"done after {n} steps")
    if name == "add_tool":
        STATE["late"] = True
        await ctx.session.send_tool_list_changed()
        return _text("late_tool added")
    if name == "sleep":
        await anyio.sleep(int(args.get("n") or 0) / 1000)
        return _text("slept")
    if name in ("ask_model", "ask_model_later"):
        if name == "ask_model_later":  # asks after n ms, with maxTokens 11
            await anyio.sleep(int(args.get("n") or 0) / 1000)
            args = {"n": 11}
        request = types.CreateMessageRequest(
            params=types.CreateMessageRequestParams(
                messages=[types.SamplingMessage(role="user", content=types.TextContent(text="What is 2+2?"))],
                max_tokens=int(args.get("n") or 500),
            )
        )
        try:
            answer = await ctx.session.send_request(
                request,
                types.CreateMessageResult,
                metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
            )
        except MCPError as exc:
            return _text(f"sampling refused: {exc.error.message}", error=True)
        return _text(f"model said: {answer.content.text} (model={answer.model})")
    if name == "log_something":
        note = types.LoggingMessageNotification(
            params=types.LoggingMessageNotificationParams(
                level="warning", logger="worker", data={"said": "careful"}
            )
        )
        await ctx.session.send_notification(note, related_request_id=ctx.request_id)
        return _text("logged")
    if name == "touch":
        await ctx.session.send_resource_updated(str(args.get("uri") or "test://static/readme"))
        return _text("touched")
    if name == "my_roots":
        try:
            roots = await ctx.session.send_request(
                types.ListRootsRequest(),
                types.ListRootsResult,
                metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
            )
        except MCPError as exc:
            return _text(f"roots refused: {exc.error.message}", error=True)
        return _text(" ".join(str(r.uri) for r in roots.roots))
    if name == "wait_forever":
        try:
            await anyio.sleep(3600)
        except anyio.get_cancelled_exc_class():
            (MARKERS / "cancelled").write_text("cancelled")
            raise
        return _text("woke up")
    raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {name}")


RESOURCES = {
    "test://static/readme": README,
    "test://secret/prod-keys": "AKIA-not-for-agents",
    "test://big": BIG,
}


async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
    return types.ListResourcesResult(
        resources=[
            types.Resource(uri=u, name=u.rsplit("/", 1)[-1], mime_type="text/plain") for u in RESOURCES
        ]
    )


async def list_templates(ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
    return types.ListResourceTemplatesResult(
        resource_templates=[types.ResourceTemplate(uri_template="test://item/{id}", name="item")]
    )


async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
    uri = params.uri
    if uri == "test://asks":  # not listed: a read that asks the agent's model mid-read (legacy form)
        request = types.CreateMessageRequest(
            params=types.CreateMessageRequestParams(
                messages=[types.SamplingMessage(role="user", content=types.TextContent(text="What is 2+2?"))],
                max_tokens=50,
            )
        )
        try:
            answer = await ctx.session.send_request(
                request,
                types.CreateMessageResult,
                metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
            )
            text = f"model said: {answer.content.text}"
        except MCPError as exc:
            text = f"sampling refused: {exc.error.message}"
    elif uri.startswith("test://item/"):
        text = f"item {uri.rsplit('/', 1)[-1]}"
    elif uri in RESOURCES:
        text = RESOURCES[uri]
    else:
        raise MCPError(-32002, f"Resource not found: {uri}")
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=uri, text=text, mime_type="text/plain")]
    )


async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
    STATE["subscribed"].append(params.uri)
    (MARKERS / "subscribed").write_text(json.dumps(STATE["subscribed"]))
    return types.EmptyResult()


async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    STATE["subscribed"].remove(params.uri)
    (MARKERS / "subscribed").write_text(json.dumps(STATE["subscribed"]))
    return types.EmptyResult()


async def list_prompts(ctx: Any, params: Any) -> types.ListPromptsResult:
    return types.ListPromptsResult(
        prompts=[
            types.Prompt(
                name="greet",
                description="Greets someone",
                arguments=[types.PromptArgument(name="name", required=True)],
            )
        ]
    )


async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
    if params.name != "greet":
        raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name}")
    who = (params.arguments or {}).get("name", "nobody")
    return types.GetPromptResult(
        description="a greeting",
        messages=[types.PromptMessage(role="user", content=types.TextContent(text=f"Say hello to {who}"))],
    )


async def complete(ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
    names = ["Alice", "Alicia", "Bob"]
    prefix = params.argument.value
    values = [n for n in names if n.startswith(prefix)]
    return types.CompleteResult(completion=types.Completion(values=values, total=len(values), has_more=False))


async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
    STATE["level"] = params.level
    (MARKERS / "level").write_text(params.level)
    return types.EmptyResult()


server: Server[Any] = Server(
    "surface",
    version="1",
    on_list_tools=list_tools,
    on_call_tool=call_tool,
    on_list_resources=list_resources,
    on_list_resource_templates=list_templates,
    on_read_resource=read_resource,
    on_subscribe_resource=subscribe,
    on_unsubscribe_resource=unsubscribe,
    on_list_prompts=list_prompts,
    on_get_prompt=get_prompt,
    on_completion=complete,
)
server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)


async def roots_changed(ctx: Any, params: Any) -> None:
    (MARKERS / "roots_changed").write_text("yes")


server.add_notification_handler("notifications/roots/list_changed", types.NotificationParams, roots_changed)


async def main() -> None:
    options = server.create_initialization_options(
        NotificationOptions(tools_changed=True, resources_changed=True)
    )
    async with stdio_server() as (r, w):
        await server.run(r, w, options)


if __name__ == "__main__":
    anyio.run(main)
