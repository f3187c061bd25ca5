"""A stdio MCP server for tests: its one tool, ``echo_meta``, answers with the ``_meta`` it received."""

from __future__ import annotations

import json
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server

TOOL = types.Tool(
    name="echo_meta",
    description="Returns the request's _meta.",
    input_schema={"type": "object", "properties": {}},
    annotations=types.ToolAnnotations(read_only_hint=True, destructive_hint=False),
)


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[TOOL])


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    meta = dict(ctx.meta or {})
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(meta, sort_keys=True))]
    )


async def main() -> None:
    server: Server[Any] = Server("echo-meta", on_list_tools=list_tools, on_call_tool=call_tool)
    async with stdio_server() as (r, w):
        await server.run(r, w, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
