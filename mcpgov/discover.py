"""Tool discovery on the enforcement side: list the tools of the configured upstream servers where they
run and report the definitions to the portal (``POST /api/v1/tool-reports/``), where an admin reviews
and approves them. A report never changes policy by itself.

Used by ``mcpgov discover`` and by the gateway at session start (:func:`report_session_tools`). The
portal's own discovery of HTTP servers collects tools with :func:`collect_tools` too.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import sys
import weakref
from collections.abc import Mapping
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import get_default_environment, stdio_client

from mcpgov.config import ConfigError, UpstreamConfig, load_mcp_config

log = logging.getLogger("mcpgov.discover")

REPORT_PATH = "/api/v1/tool-reports/"
# The report's bounds, the same on both sides (the portal refuses anything larger, unread).
MAX_REPORT_BYTES = 4 * 1024 * 1024
MAX_SERVERS = 64
MAX_TOOLS = 512
MAX_DEPTH = 40  # of the whole JSON body; a tool's inputSchema gets what the envelope leaves
MAX_NAME = 200
MAX_TITLE = 300
MAX_DESCRIPTION = 16_384
MAX_PAGES = 100  # a server whose tools/list never ends cannot hang discovery
SOURCES = ("discover", "gateway")


class ToolListError(Exception):
    """The server's tool list is not usable (endless, looping or with duplicate names)."""


async def collect_tools(client: Client) -> list[types.Tool]:
    """Every page of ``tools/list`` from a connected SDK client."""
    tools: list[types.Tool] = []
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
        if cursor in seen:
            raise ToolListError(f"The server repeats the page cursor {cursor!r} of its tool list.")
        seen.add(cursor)
    else:
        raise ToolListError(f"The server's tool list goes on past {MAX_PAGES} pages.")
    names = [t.name for t in tools]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise ToolListError(f"The server lists these tools more than once: {', '.join(duplicates)}.")
    return tools


def tool_definition(tool: types.Tool) -> dict[str, Any]:
    """A tool as reported: the fields the portal records, camelCase as on the MCP wire."""
    annotations = (
        tool.annotations.model_dump(by_alias=True, exclude_none=True, mode="json") if tool.annotations else {}
    )
    return {
        "name": tool.name,
        "title": tool.title or "",
        "description": tool.description or "",
        "inputSchema": dict(tool.input_schema or {}),
        "annotations": annotations,
    }


async def list_server_tools(config: UpstreamConfig, *, timeout: float = 20.0) -> list[types.Tool]:
    """Start (stdio) or connect to (HTTP) one configured server here and list its tools."""
    with anyio.fail_after(timeout):
        if config.url:
            async with httpx2.AsyncClient(
                headers=dict(config.headers), timeout=httpx2.Timeout(timeout)
            ) as http:
                from mcp.client.streamable_http import streamable_http_client

                async with Client(
                    streamable_http_client(config.url, http_client=http), mode="legacy", cache=None
                ) as client:
                    return await collect_tools(client)
        params = StdioServerParameters(
            command=config.command or "",
            args=list(config.args),
            env=get_default_environment() | dict(config.env),
        )
        async with Client(stdio_client(params), mode="legacy", cache=None) as client:
            return await collect_tools(client)


def report_body(source: str, servers: Mapping[str, list[types.Tool]]) -> dict[str, Any]:
    return {
        "source": source,
        "servers": [
            {"server": slug, "tools": [tool_definition(t) for t in tools]} for slug, tools in servers.items()
        ],
    }


async def post_report(portal: Any, body: dict[str, Any]) -> dict[str, Any]:
    """POST one report with a :class:`mcpgov.portal_client.PortalClient`; returns the portal's answer."""
    from mcpgov.portal_client import _error

    resp = await portal.http.post(REPORT_PATH, json=body)
    if resp.status_code == 200:
        return resp.json()
    raise _error(resp)


# --- the gateway at session start ----------------------------------------------------------------

_reported: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


async def report_session_tools(portal: Any, upstreams: Mapping[str, Any]) -> None:
    """Report the tool definitions a gateway sees (its upstreams' ``tools``) when a session starts.

    Sent again only when they changed since the last report this portal client accepted; a failure
    is logged and never touches the session (the portal keeps enforcing the approved definitions).
    """
    servers = {slug: list(up.tools) for slug, up in upstreams.items() if up.tools}
    if not servers:
        return
    body = report_body("gateway", servers)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    if _reported.get(portal) == digest:
        return
    try:
        with anyio.fail_after(30):
            await post_report(portal, body)
    except Exception as exc:  # the report is advisory: the session goes on
        log.warning("could not report the tool definitions to the portal: %s", exc)
        return
    _reported[portal] = digest


# --- mcpgov discover ---------------------------------------------------------------------------------


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_discover_cli(args: argparse.Namespace) -> int:
    """``mcpgov discover``: 0 when every server was listed and reported, 1 when one was not, 2 on bad use."""
    from mcpgov.policy_source import PolicySourceError, read_token

    try:
        read_token(args)
    except PolicySourceError as exc:
        _say(f"mcpgov discover: {exc}")
        return 2
    if not args.portal or not args.token:
        _say("mcpgov discover: give --portal and --token or --token-file (or MCPGOV_PORTAL / MCPGOV_TOKEN)")
        return 2
    if not args.config:
        _say("mcpgov discover: give --config (an .mcp.json-style file with mcpServers)")
        return 2
    try:
        upstreams, _ = load_mcp_config(args.config, environment=args.env)
    except ConfigError as exc:
        _say(f"mcpgov discover: {exc}")
        return 2
    if args.server:
        missing = [s for s in args.server if s not in upstreams]
        if missing:
            _say(f"mcpgov discover: not in {args.config}: {', '.join(missing)} (has: {', '.join(upstreams)})")
            return 2
        upstreams = {s: upstreams[s] for s in args.server}
    return anyio.run(_discover, args, upstreams)


async def _discover(args: argparse.Namespace, upstreams: dict[str, UpstreamConfig]) -> int:
    from mcpgov.portal_client import PortalClient, PortalError

    listed: dict[str, list[types.Tool]] = {}
    failed = 0
    for slug, config in upstreams.items():
        try:
            listed[slug] = await list_server_tools(config, timeout=args.timeout)
        except Exception as exc:
            cause = exc
            while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
                cause = cause.exceptions[0]
            reason = (
                "no answer within the timeout"
                if isinstance(cause, TimeoutError)
                else f"{type(cause).__name__}: {cause}"
            )
            _say(f"{slug}: cannot list its tools ({reason})")
            failed += 1
    if not listed:
        return 1
    portal = PortalClient(args.portal, args.token)
    try:
        answer = await post_report(portal, report_body("discover", listed))
    except PortalError as exc:
        _say(f"mcpgov discover: the portal refused the report: {exc.detail} ({exc.code})")
        return 1
    except httpx2.HTTPError as exc:
        _say(f"mcpgov discover: portal unreachable: {exc}")
        return 1
    finally:
        with contextlib.suppress(Exception):
            await portal.aclose()
    for item in answer.get("servers", []):
        slug, status = item.get("server"), item.get("status")
        count = len(listed.get(slug, []))
        if status == "pending":
            changes = "; ".join(f"{k}: {', '.join(v)}" for k, v in (item.get("changes") or {}).items() if v)
            _say(f"{slug}: {count} tools reported, waiting for an admin's review ({changes or 'no change'})")
        elif status == "unchanged":
            _say(f"{slug}: {count} tools, the same as approved on the portal")
        elif status == "dismissed":
            _say(f"{slug}: {count} tools, the same definitions an admin dismissed before")
        else:
            _say(f"{slug}: not reported: {item.get('detail') or status}")
            failed += 1
    return 1 if failed else 0


__all__ = [
    "MAX_DEPTH",
    "MAX_REPORT_BYTES",
    "MAX_SERVERS",
    "MAX_TOOLS",
    "ToolListError",
    "collect_tools",
    "list_server_tools",
    "report_body",
    "report_session_tools",
    "run_discover_cli",
    "tool_definition",
]
