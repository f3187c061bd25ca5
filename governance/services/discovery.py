"""Tool discovery: ask a catalogue server for its tools with the official `mcp` client, then record them.

The connection runs in a worker thread with its own event loop, outside any database transaction;
only once the full list is in hand is it written, through `server_tools_record`.
"""

from __future__ import annotations

import concurrent.futures
import shlex
import tempfile
from typing import Any, TextIO

import anyio
import httpx2
from django.core.exceptions import ValidationError
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, Tool
from pydantic import ValidationError as PydanticValidationError

from governance.choices import Transport
from governance.models import McpServer
from governance.services.common import check_policy_perm
from governance.services.servers import server_tools_record

MAX_PAGES = 100  # a server whose tools/list never ends cannot hang discovery
STDERR_TAIL = 600


class DiscoveryError(Exception):
    """The server could not be asked for its tools; nothing was written."""


def server_discover_tools(*, server: McpServer, actor=None, timeout: float = 20.0) -> dict[str, list[str]]:
    """Connect to `server`, list all its tools and record them (added, updated, removed).

    An admin's read/write override and approval flag survive re-discovery (see server_tools_record).
    Raises DiscoveryError if the server cannot be reached or does not answer as an MCP server within
    `timeout` seconds; PermissionDenied if `actor` may not edit the team's policy. Safe to call from
    sync views, also under a running event loop: the client runs on a worker thread.
    """
    check_policy_perm(actor, server.team)
    tools = server_list_tools(server=server, timeout=timeout)
    try:
        return server_tools_record(server=server, tools=tools, actor=actor)
    except ValidationError as exc:
        raise DiscoveryError(
            f"The tools of {server.slug} cannot be stored: {' '.join(exc.messages)}"
        ) from exc


def server_list_tools(*, server: McpServer, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The server's tools as dicts for server_tools_record (no database access)."""
    if not server.is_connectable:
        needs = "command" if server.transport == Transport.STDIO else "URL"
        raise DiscoveryError(f"{server.slug} has no {needs} to connect to; set its transport first.")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcp-discovery") as pool:
        return pool.submit(anyio.run, _list_tools, server.transport, _target(server), timeout).result()


def _target(server: McpServer) -> StdioServerParameters | str:
    if server.transport == Transport.STDIO:
        return StdioServerParameters(command=server.command, args=[str(a) for a in server.args])
    return server.url


async def _list_tools(
    transport: str, target: StdioServerParameters | str, timeout: float
) -> list[dict[str, Any]]:
    http_errors: list[int] = []
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errlog:
        try:
            with anyio.fail_after(timeout):
                if transport == Transport.STDIO:
                    tools = await _fetch(stdio_client(target, errlog=errlog))
                else:

                    async def record_status(response: httpx2.Response) -> None:
                        if response.status_code >= 400:
                            http_errors.append(response.status_code)

                    hooks = {"response": [record_status]}
                    async with httpx2.AsyncClient(timeout=httpx2.Timeout(timeout), event_hooks=hooks) as http:
                        tools = await _fetch(streamable_http_client(target, http_client=http))
        except BaseException as exc:  # anyio wraps failures in exception groups; explain the first real one
            cause = _first_cause(exc)
            if not isinstance(cause, Exception):
                raise
            raise DiscoveryError(_explain(cause, target, timeout, http_errors, _tail(errlog))) from cause
    return tools


async def _fetch(transport: Any) -> list[dict[str, Any]]:
    # "legacy" (the initialize handshake) is what every server answers today; "auto" probes
    # server/discover first, which a server that ignores unknown methods answers only by timing out.
    async with Client(transport, mode="legacy", cache=None) as client:
        tools: list[Tool] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
            if cursor in seen:
                raise DiscoveryError(f"The server repeats the page cursor {cursor!r} of its tool list.")
            seen.add(cursor)
        else:
            raise DiscoveryError(f"The server's tool list goes on past {MAX_PAGES} pages.")
    names = [t.name for t in tools]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise DiscoveryError(f"The server lists these tools more than once: {', '.join(duplicates)}.")
    return [_tool_spec(t) for t in tools]


def _tool_spec(tool: Tool) -> dict[str, Any]:
    annotations = (
        tool.annotations.model_dump(by_alias=True, exclude_none=True, mode="json") if tool.annotations else {}
    )
    return {
        "name": tool.name,
        "title": tool.title or "",
        "description": tool.description or "",
        "input_schema": dict(tool.input_schema or {}),
        "annotations": annotations,  # camelCase as on the wire: readOnlyHint, destructiveHint, ...
    }


def _first_cause(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _tail(errlog: TextIO) -> str:
    try:
        errlog.flush()
        errlog.seek(0)
        text = errlog.read().strip()
    except (OSError, ValueError):
        return ""
    return text[-STDERR_TAIL:]


def _explain(
    exc: Exception, target: StdioServerParameters | str, timeout: float, http_errors: list[int], stderr: str
) -> str:
    if isinstance(target, StdioServerParameters):
        where = f"the command `{shlex.join([target.command, *target.args])}`"
    else:
        where = target
    if isinstance(exc, DiscoveryError):
        message = str(exc)
    elif isinstance(exc, TimeoutError):
        message = f"No MCP answer from {where} within {timeout:g} s; is it an MCP server?"
    elif isinstance(exc, FileNotFoundError) and isinstance(target, StdioServerParameters):
        message = f"Cannot start {target.command!r}: command not found."
    elif isinstance(exc, PermissionError) and isinstance(target, StdioServerParameters):
        message = f"Cannot start {target.command!r}: permission denied (is it executable?)."
    elif http_errors:
        message = (
            f"{where} answered HTTP {http_errors[0]}: not an MCP streamable HTTP endpoint, or it refused "
            "the request."
        )
    elif isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
        message = f"The server ({where}) closed the connection before listing its tools; did it exit?"
    elif isinstance(exc, MCPError):
        message = f"The server ({where}) answered with MCP error {exc.code}: {exc.error.message}"
    elif isinstance(exc, httpx2.HTTPError):
        message = f"Cannot connect to {where}: {exc or type(exc).__name__}"
    elif isinstance(exc, PydanticValidationError):
        message = (
            f"The answer of {where} is not valid MCP: {exc.error_count()} problem(s), first: "
            f"{exc.errors()[0]['msg']}"
        )
    elif isinstance(exc, OSError):
        message = f"Cannot reach {where}: {exc}"
    else:
        message = f"Discovery from {where} failed: {type(exc).__name__}: {exc}"
    if stderr:
        message += f"\nThe server's stderr ends with:\n{stderr}"
    return message


__all__ = ["DiscoveryError", "server_discover_tools", "server_list_tools"]
