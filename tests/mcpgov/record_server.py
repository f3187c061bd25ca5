"""A stdio MCP server for tests: its one tool, ``record``, appends the time it received the call and
its ``n`` argument to the file named by its first argument, then answers ``recorded <n>``, or the text
of its ``echo`` argument when there is one."""

from __future__ import annotations

import sys
import time
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server

TOOL = types.Tool(
    name="record",
    description="Records that the call arrived.",
    input_schema={"type": "object", "properties": {"n": {"type": "integer"}, "echo": {"type": "string"}}},
    annotations=types.ToolAnnotations(read_only_hint=True, destructive_hint=False),
)


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[TOOL])


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    n = (params.arguments or {}).get("n")
    with open(sys.argv[1], "a") as fh:
        fh.write(f"{n} {time.time()!r}\n")
    text = (params.arguments or {}).get("echo") or f"recorded {n}"
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


async def main() -> None:
    server: Server[Any] = Server("record", on_list_tools=list_tools, on_call_tool=call_tool)
    async with stdio_server() as (r, w):
        await server.run(r, w, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
