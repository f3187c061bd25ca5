"""Tool discovery from the portal: ask a catalogue server for its tools with the official `mcp` client,
then record them.

HTTP servers are asked through the SSRF guard (governance/services/netguard.py). Stdio servers are
team code: the portal starts none unless the operator enabled the bubblewrap sandbox
(MCPGOV_PORTAL_STDIO_DISCOVERY=sandbox, governance/services/sandbox.py); otherwise their tools come
from the enforcement side (`mcpgov discover`, or a gateway at session start) as reports an admin
approves (governance/services/tool_reports.py). The connection runs in a worker thread with its own
event loop, outside any database transaction; only once the full list is in hand is it written,
through `server_tools_record`.
"""

from __future__ import annotations

import concurrent.futures
import logging
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
from mcp_types import CONNECTION_CLOSED
from pydantic import ValidationError as PydanticValidationError

from governance.choices import Transport
from governance.models import McpServer
from governance.services import netguard, sandbox
from governance.services.common import check_policy_perm
from governance.services.servers import server_tools_record
from mcpgov.discover import ToolListError, collect_tools, tool_definition
from portal.errors import UpstreamFailed

log = logging.getLogger("governance.discovery")
STDERR_TAIL = 2000  # logged on the portal host, never shown on the page

STDIO_REFUSED = (
    "{slug} is a stdio server: the portal does not start team commands. Discover its tools where it runs, "
    "with the enforcement client of an environment: `mcpgov discover --portal URL --token TOKEN --config "
    ".mcp.json --server {slug}` (gateways also report the tools they see at session start); then approve "
    "the reported definitions on this server's page."
)


class DiscoveryError(UpstreamFailed):
    """The server could not be asked for its tools (502); nothing was written."""

    default_code = "discovery_failed"


class DiscoveryRefused(DiscoveryError):
    """The portal does not connect to this server (400: a stdio command, or a refused address)."""

    status = 400
    default_code = "discovery_refused"


def stdio_discovery_enabled() -> bool:
    return sandbox.stdio_mode() == sandbox.SANDBOX


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
    """The server's tools as dicts for server_tools_record (no database access).

    Raises DiscoveryRefused before any process or connection is started when the portal must not
    reach the server.
    """
    if not server.is_connectable:
        needs = "command" if server.transport == Transport.STDIO else "URL"
        raise DiscoveryRefused(f"{server.slug} has no {needs} to connect to; set its transport first.")
    target = _target(server, timeout)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcp-discovery") as pool:
        return pool.submit(anyio.run, _list_tools, target, timeout).result()


def _target(server: McpServer, timeout: float) -> _Sandboxed | netguard.CheckedTarget:
    if server.transport == Transport.STDIO:
        mode = sandbox.stdio_mode()
        if mode != sandbox.SANDBOX:
            if mode not in sandbox.MODES:
                raise DiscoveryRefused(
                    f"MCPGOV_PORTAL_STDIO_DISCOVERY={mode!r} is not a mode (off or sandbox); "
                    + STDIO_REFUSED.format(slug=server.slug)
                )
            raise DiscoveryRefused(STDIO_REFUSED.format(slug=server.slug))
        try:
            sandbox.require_sandbox()
            params = sandbox.sandboxed_parameters(
                server.command, [str(a) for a in server.args], timeout=timeout
            )
        except sandbox.SandboxUnavailable as exc:
            raise DiscoveryRefused(str(exc)) from exc
        return _Sandboxed(command=server.command, args=[str(a) for a in server.args], params=params)
    try:
        return netguard.check_url(server.url)
    except netguard.TargetRefused as exc:
        raise DiscoveryRefused(str(exc)) from exc


class _Sandboxed:
    def __init__(self, *, command: str, args: list[str], params: StdioServerParameters) -> None:
        self.command, self.args, self.params = command, args, params

    def __str__(self) -> str:
        return f"the command `{shlex.join([self.command, *self.args])}` (sandboxed)"


async def _list_tools(target: _Sandboxed | netguard.CheckedTarget, timeout: float) -> list[dict[str, Any]]:
    http_errors: list[int] = []
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errlog:
        try:
            with anyio.fail_after(timeout):
                if isinstance(target, _Sandboxed):
                    tools = await _fetch(stdio_client(target.params, errlog=errlog))
                else:

                    async def record_status(response: httpx2.Response) -> None:
                        if response.status_code >= 400 or response.is_redirect:
                            http_errors.append(response.status_code)

                    hooks = {"response": [record_status]}
                    async with netguard.pinned_client(target, timeout=timeout, event_hooks=hooks) as http:
                        tools = await _fetch(streamable_http_client(target.url, http_client=http))
        except BaseException as exc:  # anyio wraps failures in exception groups; explain the first real one
            cause = _first_cause(exc)
            if not isinstance(cause, Exception):
                raise
            if stderr := _tail(errlog):
                log.warning("discovery from %s failed; the server's stderr ends with:\n%s", target, stderr)
            if isinstance(cause, netguard.TargetRefused):
                raise DiscoveryRefused(str(cause)) from cause
            raise DiscoveryError(_explain(cause, target, timeout, http_errors)) from cause
    return tools


async def _fetch(transport: Any) -> list[dict[str, Any]]:
    # "legacy" (the initialize handshake) is what every server answers today; "auto" probes
    # server/discover first, which a server that ignores unknown methods answers only by timing out.
    async with Client(transport, mode="legacy", cache=None) as client:
        tools = await collect_tools(client)
    return [tool_spec(tool_definition(t)) for t in tools]


def tool_spec(definition: dict[str, Any]) -> dict[str, Any]:
    """A reported definition (MCP wire names) as server_tools_record takes it."""
    return {
        "name": definition["name"],
        "title": definition.get("title") or "",
        "description": definition.get("description") or "",
        "input_schema": dict(definition.get("inputSchema") or {}),
        "annotations": dict(definition.get("annotations") or {}),  # camelCase: readOnlyHint, ...
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
    exc: Exception, target: _Sandboxed | netguard.CheckedTarget, timeout: float, http_errors: list[int]
) -> str:
    where = str(target) if isinstance(target, _Sandboxed) else target.url
    command = target.command if isinstance(target, _Sandboxed) else None
    if isinstance(exc, DiscoveryError | ToolListError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"No MCP answer from {where} within {timeout:g} s; is it an MCP server?"
    if http_errors:
        status = http_errors[0]
        if 300 <= status < 400:
            return f"{where} answered HTTP {status} (a redirect); the portal does not follow redirects."
        return (
            f"{where} answered HTTP {status}: not an MCP streamable HTTP endpoint, or it refused the request."
        )
    if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
        if command is not None:
            return (
                f"The server ({where}) closed the connection before listing its tools: did it exit, or is "
                f"{command!r} missing or outside the sandbox's read-only paths? (Its stderr is in the "
                "portal's log.)"
            )
        return f"The server ({where}) closed the connection before listing its tools; did it exit?"
    if isinstance(exc, MCPError):
        return f"The server ({where}) answered with MCP error {exc.code}: {exc.error.message}"
    if isinstance(exc, httpx2.HTTPError):
        return f"Cannot connect to {where}: {exc or type(exc).__name__}"
    if isinstance(exc, PydanticValidationError):
        return (
            f"The answer of {where} is not valid MCP: {exc.error_count()} problem(s), first: "
            f"{exc.errors()[0]['msg']}"
        )
    if isinstance(exc, OSError):
        return f"Cannot reach {where}: {exc}"
    return f"Discovery from {where} failed: {type(exc).__name__}: {exc}"
