"""An MCP upstream (stdio) with 50 tools that announces ``tools.listChanged``: the tools/list benchmark's upstream."""

from __future__ import annotations

import anyio
import mcp_types as types
from mcp.server import NotificationOptions, Server
from mcp.server.stdio import stdio_server

TOOLS = [
    types.Tool(
        name=f"tool_{i:02d}",
        description=f"Tool number {i}: reads a record by id and returns it with its history and links.",
        input_schema={
            "type": "object",
            "properties": {
                "id": {"type": "string", "description": "the record's id"},
                "depth": {"type": "integer", "minimum": 0, "maximum": 5},
                "fields": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["id"],
        },
        annotations=types.ToolAnnotations(read_only_hint=True),
    )
    for i in range(50)
]


async def list_tools(ctx, params) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=f"{params.name}: ok")])


server = Server("many", version="1", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (r, w):
        await server.run(r, w, server.create_initialization_options(NotificationOptions(tools_changed=True)))


if __name__ == "__main__":
    anyio.run(main)
