"""A stdio MCP upstream for ``bench/governed_path.py`` whose one tool asks the agent's user once per call.

``confirm`` sends a form elicitation (``elicitation/create``) on the call's own request and answers with
what the user said: every call through an HTTP gateway then carries a server-to-client request on the
call's SSE stream and the agent's POSTed answer (the streamed fast path vs the SDK path).
"""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server
from mcp.shared.message import ServerMessageMetadata

TOOL = types.Tool(
    name="confirm",
    description="Asks the user to confirm, then says what they answered",
    input_schema={"type": "object", "properties": {"timezone": {"type": "string"}}},
    annotations=types.ToolAnnotations(read_only_hint=True, destructive_hint=False),
)


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[TOOL])


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    request = types.ElicitRequest(
        params=types.ElicitRequestFormParams(
            message="Go ahead?",
            requested_schema={"type": "object", "properties": {"ok": {"type": "boolean"}}},
        )
    )
    answer = await ctx.session.send_request(
        request, types.ElicitResult, metadata=ServerMessageMetadata(related_request_id=ctx.request_id)
    )
    return types.CallToolResult(content=[types.TextContent(text=f"{answer.action} {answer.content}")])


server: Server[Any] = Server("eliciting", version="1", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (r, w):
        await server.run(r, w, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
