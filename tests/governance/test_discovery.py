"""Tool discovery against real MCP servers: mcp-server-time, mcp-server-git and a streamable-HTTP server."""

from __future__ import annotations

import asyncio
import http.server
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connections

from governance.models import McpTool
from governance.services.discovery import DiscoveryError, server_discover_tools
from governance.services.servers import server_create, tool_update
from portal.models import ChangeRecord
from tests.conftest import free_port
from tests.factories import ToolFactory

PY = sys.executable

# A streamable-HTTP MCP server on the SDK's low-level Server: annotated tools served two per page.
# argv: port, comma-separated tool names; a name ending in "!" gets a changed description.
HTTP_SERVER = textwrap.dedent("""
    import sys

    import uvicorn
    from mcp.server import Server
    from mcp.types import ListToolsResult, Tool, ToolAnnotations

    SCHEMA = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
    TOOLS = {
        "search_issues": Tool(name="search_issues", title="Search issues", description="Find issues.",
                              input_schema=SCHEMA,
                              annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True)),
        "create_issue": Tool(name="create_issue", description="Open an issue.", input_schema=SCHEMA,
                             annotations=ToolAnnotations(title="Create an issue", read_only_hint=False,
                                                         destructive_hint=False)),
        "delete_repository": Tool(name="delete_repository", description="Delete a repository.",
                                  input_schema=SCHEMA, annotations=ToolAnnotations(destructive_hint=True)),
        "ping": Tool(name="ping", description="No annotations at all.", input_schema={"type": "object"}),
        "list_labels": Tool(name="list_labels", input_schema={"type": "object"},
                            annotations=ToolAnnotations(read_only_hint=True)),
    }
    PAGE = 2
    NAMES = sys.argv[2].split(",")


    def tool(name):
        if name.endswith("!"):
            return TOOLS[name[:-1]].model_copy(update={"description": "Changed."})
        return TOOLS[name]


    async def list_tools(ctx, params):
        start = int(params.cursor) if params is not None and params.cursor else 0
        tools = [tool(n) for n in NAMES]
        end = start + PAGE
        return ListToolsResult(tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None)


    server = Server("governance-test-http", version="1.0", on_list_tools=list_tools)
    app = server.streamable_http_app(streamable_http_path="/mcp")
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
""")


# The SDK's high-level MCPServer (FastMCP's successor): schemas come from the functions' signatures.
MCPSERVER_APP = textwrap.dedent('''
    import sys

    import uvicorn
    from mcp.server.mcpserver import MCPServer
    from mcp.types import ToolAnnotations

    mcp = MCPServer("notes")


    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True))
    def read_note(name: str) -> str:
        """Read a note by name."""
        return ""


    @mcp.tool(title="Write a note", annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True))
    def write_note(name: str, text: str) -> str:
        """Write (replace) a note."""
        return ""


    @mcp.tool()
    def count_notes() -> int:
        """How many notes exist."""
        return 0


    uvicorn.run(mcp.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
''')


def wait_for_port(port: int, proc: subprocess.Popen | None = None, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {seconds} s")


@pytest.fixture
def http_mcp_server(tmp_path):
    """Start an HTTP MCP server script (default HTTP_SERVER) with arguments; returns its URL.

    Starting another stops the previous one; all are stopped after the test.
    """
    procs: list[subprocess.Popen] = []

    def start(*args: str, script: str = HTTP_SERVER) -> str:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        path = tmp_path / f"server_{len(procs)}.py"
        path.write_text(script)
        port = free_port()
        with open(tmp_path / f"server_{len(procs)}.log", "w") as log:
            proc = subprocess.Popen([PY, str(path), str(port), *args], stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        try:
            wait_for_port(port, proc)
        except RuntimeError as exc:
            raise RuntimeError(
                f"{exc}: {(tmp_path / f'server_{len(procs) - 1}.log').read_text()[-2000:]}"
            ) from exc
        return f"http://127.0.0.1:{port}/mcp"

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def plain_http_server():
    """An HTTP server that is not an MCP server (answers POST with 501)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
    server.shutdown()
    server.server_close()


def stdio_server(team, admin, slug: str, *args: str, command: str = PY):
    return server_create(
        team=team, actor=admin, slug=slug, transport="stdio", command=command, args=list(args)
    )


def tools_of(server) -> dict[str, McpTool]:
    return {tool.name: tool for tool in server.tools.all()}


def history() -> tuple[int, int, list]:
    return (
        McpTool.objects.count(),
        ChangeRecord.objects.count(),
        list(McpTool.objects.values_list("name", "description", "access_class_override")),
    )


@pytest.mark.slow
def test_time_server_tools_are_discovered_as_read_only(team, admin):
    server = stdio_server(team, admin, "time", "-m", "mcp_server_time")
    report = server_discover_tools(server=server, actor=admin)
    assert report == {"added": ["get_current_time", "convert_time"], "updated": [], "removed": []}
    tools = tools_of(server)
    for tool in tools.values():
        # mcp-server-time annotates both tools: read-only, not destructive, idempotent, closed world.
        assert tool.annotations == {
            "readOnlyHint": True,
            "destructiveHint": False,
            "idempotentHint": True,
            "openWorldHint": False,
        }
        assert tool.read_only_hint is True and tool.destructive_hint is False
        assert tool.access_class == "read"
        assert tool.description and tool.discovered_at is not None
    assert "timezone" in tools["get_current_time"].input_schema["properties"]
    assert set(tools["convert_time"].input_schema["required"]) == {
        "source_timezone",
        "time",
        "target_timezone",
    }
    server.refresh_from_db()
    assert server.tools_discovered_at is not None
    record = ChangeRecord.objects.filter(team=team, action="action").latest("id")
    assert (
        record.actor == admin and record.summary == "Tools discovered (added: get_current_time, convert_time)"
    )
    # A fresh list every time (cache=None), and nothing changed since.
    assert server_discover_tools(server=server, actor=admin) == {"added": [], "updated": [], "removed": []}


@pytest.mark.slow
def test_git_server_write_tools_and_an_admin_override_survives_rediscovery(team, admin, tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    server = stdio_server(team, admin, "git", "-m", "mcp_server_git", "--repository", str(repo))
    report = server_discover_tools(server=server, actor=admin)
    assert {"git_status", "git_log", "git_commit", "git_add", "git_reset"} <= set(report["added"])
    tools = tools_of(server)
    classes = {name: tool.access_class for name, tool in tools.items()}
    for name in ("git_status", "git_diff", "git_log", "git_show", "git_branch"):
        assert classes[name] == "read", name
    for name in ("git_commit", "git_add", "git_reset", "git_create_branch", "git_checkout"):
        assert classes[name] == "write", name
    assert tools["git_commit"].annotations["readOnlyHint"] is False
    assert tools["git_reset"].destructive_hint is True
    assert tools["git_add"].destructive_hint is False

    # Hints are untrusted: the admin decides. Re-discovery keeps the decision.
    tool_update(tool=tools["git_status"], actor=admin, access_class_override="write")
    tool_update(tool=tools["git_add"], actor=admin, approval_required=True)
    assert server_discover_tools(server=server, actor=admin) == {"added": [], "updated": [], "removed": []}
    tools = tools_of(server)
    assert tools["git_status"].access_class == "write" and tools["git_status"].read_only_hint is True
    assert tools["git_add"].approval_required is True


@pytest.mark.slow
def test_http_server_every_page_is_collected_and_changes_are_recorded(team, admin, http_mcp_server):
    url = http_mcp_server("search_issues,create_issue,delete_repository,ping,list_labels")
    server = server_create(team=team, actor=admin, slug="issues_api", transport="http", url=url)
    report = server_discover_tools(server=server, actor=admin)
    # Five tools served two per page: all three pages are read.
    assert report["added"] == ["search_issues", "create_issue", "delete_repository", "ping", "list_labels"]
    tools = tools_of(server)
    assert {name: tool.access_class for name, tool in tools.items()} == {
        "search_issues": "read",
        "list_labels": "read",
        "create_issue": "write",  # readOnlyHint false
        "delete_repository": "write",  # destructive
        "ping": "write",  # no annotations: the spec's conservative default is "may write"
    }
    assert tools["search_issues"].annotations == {"readOnlyHint": True, "openWorldHint": True}
    assert tools["search_issues"].title == "Search issues"
    assert tools["create_issue"].title == "Create an issue"  # from the annotations
    assert (
        tools["delete_repository"].destructive_hint is True
        and tools["delete_repository"].read_only_hint is None
    )
    assert tools["ping"].annotations == {} and tools["ping"].read_only_hint is None
    assert tools["search_issues"].input_schema["required"] == ["query"]

    tool_update(tool=tools["search_issues"], actor=admin, access_class_override="write")
    server.url = http_mcp_server("search_issues,ping!")  # the server changed: fewer tools, one redefined
    server.save()
    report = server_discover_tools(server=server, actor=admin)
    assert report == {
        "added": [],
        "updated": ["ping"],
        "removed": ["create_issue", "delete_repository", "list_labels"],
    }
    tools = tools_of(server)
    assert set(tools) == {"search_issues", "ping"}
    assert tools["ping"].description == "Changed."
    assert tools["search_issues"].access_class == "write"


@pytest.mark.slow
def test_mcpserver_app_over_http(team, admin, http_mcp_server):
    url = http_mcp_server(script=MCPSERVER_APP)
    server = server_create(team=team, actor=admin, slug="notes", transport="http", url=url)
    assert server_discover_tools(server=server, actor=admin)["added"] == [
        "read_note",
        "write_note",
        "count_notes",
    ]
    tools = tools_of(server)
    assert tools["read_note"].annotations == {"readOnlyHint": True, "idempotentHint": True}
    assert tools["read_note"].access_class == "read"
    assert tools["read_note"].description == "Read a note by name."
    assert tools["read_note"].input_schema["required"] == ["name"]
    assert tools["write_note"].title == "Write a note"
    assert (tools["write_note"].access_class, tools["write_note"].destructive_hint) == ("write", True)
    assert tools["count_notes"].annotations == {} and tools["count_notes"].access_class == "write"


@pytest.mark.slow
def test_discovery_works_when_called_under_a_running_event_loop(transactional_db, team, admin):
    """Sync code may be called where an event loop already runs in the thread: anyio.run there would fail.

    (Django gives that context its own database connection, hence committed data and the close.)
    """
    server = stdio_server(team, admin, "time", "-m", "mcp_server_time")

    async def view():
        try:
            return server_discover_tools(server=server, actor=admin)
        finally:
            connections.close_all()

    assert asyncio.run(view())["added"] == ["get_current_time", "convert_time"]


def test_command_not_found_raises_and_writes_nothing(team, admin):
    server = stdio_server(team, admin, "ghost", command="/nonexistent/mcp-server")
    ToolFactory(server=server, name="kept")
    before = history()
    with pytest.raises(DiscoveryError, match="Cannot start '/nonexistent/mcp-server': command not found"):
        server_discover_tools(server=server, actor=admin)
    assert history() == before
    server.refresh_from_db()
    assert server.tools_discovered_at is None


def test_a_server_that_dies_raises_with_its_stderr(team, admin):
    server = stdio_server(
        team, admin, "dies", "-c", "import sys; sys.exit('config file /etc/x.toml missing')"
    )
    before = history()
    with pytest.raises(DiscoveryError) as raised:
        server_discover_tools(server=server, actor=admin)
    message = str(raised.value)
    assert "closed the connection before listing its tools" in message
    assert "config file /etc/x.toml missing" in message
    assert history() == before


def test_a_process_that_is_not_an_mcp_server_times_out(team, admin):
    server = stdio_server(
        team, admin, "chatty", "-c", "print('hello, I am not MCP'); import time; time.sleep(60)"
    )
    before = history()
    started = time.monotonic()
    with pytest.raises(
        DiscoveryError, match=r"No MCP answer from the command .* within 1.5 s; is it an MCP server"
    ):
        server_discover_tools(server=server, actor=admin, timeout=1.5)
    assert time.monotonic() - started < 15
    assert history() == before


def test_an_http_server_that_is_not_mcp_raises(team, admin, plain_http_server):
    server = server_create(team=team, actor=admin, slug="web", transport="http", url=plain_http_server)
    before = history()
    with pytest.raises(DiscoveryError, match="answered HTTP 501: not an MCP streamable HTTP endpoint"):
        server_discover_tools(server=server, actor=admin, timeout=10)
    assert history() == before


def test_nothing_listening_raises(team, admin):
    server = server_create(
        team=team, actor=admin, slug="down", transport="http", url=f"http://127.0.0.1:{free_port()}/mcp"
    )
    with pytest.raises(DiscoveryError, match=r"Cannot connect to http://127\.0\.0\.1:\d+/mcp"):
        server_discover_tools(server=server, actor=admin, timeout=10)


def test_a_server_without_transport_cannot_be_discovered(team, admin):
    server = server_create(team=team, actor=admin, slug="github_api")
    with pytest.raises(DiscoveryError, match="github_api has no command to connect to"):
        server_discover_tools(server=server, actor=admin)


def test_only_policy_editors_may_discover(team, reviewer, admin):
    server = stdio_server(team, admin, "ghost", command="/nonexistent/mcp-server")
    # Refused before any connection is attempted (else this would be a DiscoveryError).
    with pytest.raises(PermissionDenied):
        server_discover_tools(server=server, actor=reviewer)
