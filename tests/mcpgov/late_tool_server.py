"""A tiny MCP upstream (stdio) that adds a tool at run time: ``late_tool`` appears from its second tools/list."""

from __future__ import annotations

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server

LISTS = 0


def _tool(name: str) -> types.Tool:
    return types.Tool(
        name=name,
        description=f"{name} says hello",
        input_schema={"type": "object", "properties": {}},
        annotations=types.ToolAnnotations(read_only_hint=True),
    )


async def list_tools(ctx, params) -> types.ListToolsResult:
    global LISTS
    LISTS += 1
    tools = [_tool("hello")] + ([_tool("late_tool")] if LISTS > 1 else [])
    return types.ListToolsResult(tools=tools)


async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=f"{params.name}: hi")])


server = Server("late", version="1", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (r, w):
        await server.run(r, w, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
