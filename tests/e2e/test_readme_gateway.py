"""The README's gateway example, pasted as a newcomer would, on the demo data: `seed_demo`, a client
registered with `create_client`, the keys saved from the portal, and the README's `.mcp.json`
snippet (parsed from README.md) run as the agent's MCP server against the portal under uvicorn.
Real upstreams: mcp-server-time, mcp-server-git and npm's server-filesystem, on a demo workspace.

The only substitutions are the ones a newcomer makes: their token in the token file, the portal's
address (a free port here, not 8000), and `.venv/bin/mcpgov` run as `python -m mcpgov` from this
checkout (the same entry point; the suite's virtualenv may live elsewhere).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import anyio
import httpx2
import pytest
from django.core.management import call_command
from django.test import Client as DjangoClient
from mcp import Client, StdioServerParameters

from audit.models import AgentSession, AuditEvent
from governance.models import AgentRole
from portal.models import Team
from tests.conftest import ROOT, run_portal
from tests.e2e.test_gateway_portal import in_thread, poll, text

pytestmark = [pytest.mark.slow]

README_PORTAL = "http://127.0.0.1:8000"


def readme_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Running an agent through the gateway")
    return readme[start : readme.index("\n## ", start + 1)]


def readme_snippet() -> dict:
    """The README's `.mcp.json` block, exactly as written."""
    [block] = re.findall(r"```json\n(.*?)```", readme_section(), re.S)
    return json.loads(block)


def readme_shell_lines() -> list[str]:
    [block] = re.findall(r"```sh\n(.*?)```", readme_section(), re.S)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.fixture
def agent_dir():
    # a neutral prefix: pytest's tmp_path carries the test name, and words such as "live" in a
    # path are what the development environment's forbidden patterns refuse
    base = Path(tempfile.mkdtemp(prefix="mcpgov-newcomer-"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_the_readme_snippet_runs_real_calls_on_the_demo_data(transactional_db, agent_dir):
    if not (ROOT / "node_modules" / ".bin" / "mcp-server-filesystem").exists():
        pytest.fail("node_modules is missing: run `make upstreams` (npm install)")
    workspace = agent_dir / "workspace"
    call_command("seed_demo", workspace=workspace, stdout=io.StringIO(), stderr=io.StringIO())
    team = Team.objects.get(slug="demo")

    # The README's shell block: create_client prints the token once; the token file; the keys.
    create, save_token, save_keys = readme_shell_lines()
    assert (
        create
        == "python manage.py create_client --team demo --env development --name laptop --role code_agent"
    )
    out = io.StringIO()
    call_command(*create.split()[2:], stdout=out, stderr=io.StringIO())
    token = out.getvalue().strip()
    assert token.startswith("mcpgov_")
    assert "'mcpgov_…' > .mcpgov-token" in save_token
    (agent_dir / ".mcpgov-token").write_text(token + "\n")
    assert save_keys.startswith(f"curl -fsS '{README_PORTAL}/api/v1/keys/?team=demo' -o keys.json")

    snippet = readme_snippet()
    server = snippet["mcpServers"]["governed"]
    assert server["command"] == ".venv/bin/mcpgov"
    with run_portal() as base:
        keys = httpx2.get(f"{base}/api/v1/keys/?team=demo", timeout=30)
        keys.raise_for_status()
        (agent_dir / "keys.json").write_bytes(keys.content)
        args = [base if a == README_PORTAL else a for a in server["args"]]
        assert args.count(base) == 1 and "--read-only" in args
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "mcpgov", *args],
            cwd=str(agent_dir),
            env={"PYTHONPATH": str(ROOT), "MCPGOV_LOG_LEVEL": "ERROR"},
        )
        results: dict[str, object] = {}

        async def agent():
            async with Client(params, mode="legacy") as c:
                tools = {t.name for t in (await c.list_tools()).tools}
                results["tools"] = tools
                results["now"] = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
                results["read"] = await c.call_tool(
                    "filesystem__read_text_file", {"path": str(workspace / "README.md")}
                )
                results["status"] = await c.call_tool("git__git_status", {"repo_path": str(workspace)})
                results["write"] = await c.call_tool(
                    "filesystem__write_file", {"path": str(workspace / "notes.txt"), "content": "hello"}
                )
                results["written_read_only"] = (workspace / "notes.txt").exists()
                results["after"] = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
                sessions = await in_thread(
                    poll,
                    lambda: list(AgentSession.objects.filter(team=team, role="code_agent")),
                    what="the session on the portal",
                )
                results["session"] = sessions[0].pk

        anyio.run(agent)

        # The README's next rows: --read-write lists and runs the filesystem's writes; git stays read-only.
        write_args = ["--read-write" if a == "--read-only" else a for a in args]
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "mcpgov", *write_args],
            cwd=str(agent_dir),
            env={"PYTHONPATH": str(ROOT), "MCPGOV_LOG_LEVEL": "ERROR"},
        )

        async def writer():
            async with Client(params, mode="legacy") as c:
                results["rw_tools"] = {t.name for t in (await c.list_tools()).tools}
                results["rw_write"] = await c.call_tool(
                    "filesystem__write_file", {"path": str(workspace / "notes.txt"), "content": "hello"}
                )
                results["rw_commit"] = await c.call_tool(
                    "git__git_commit", {"repo_path": str(workspace), "message": "agent commit"}
                )

        anyio.run(writer)

    tools = results["tools"]
    assert {
        "time__get_current_time",
        "git__git_status",
        "git__git_log",
        "filesystem__read_text_file",
    } <= tools
    # A --read-only session lists no write tool (git is bound read-only: git_commit never shows).
    assert not {"filesystem__write_file", "git__git_commit"} & tools
    assert not any(t.startswith(("github_api__", "shell_execution__")) for t in tools)
    assert not results["now"].is_error and "UTC" in text(results["now"]), text(results["now"])
    assert not results["read"].is_error and "Demo workspace" in text(results["read"]), text(results["read"])
    assert not results["status"].is_error and "branch" in text(results["status"]).lower(), text(
        results["status"]
    )
    # The write tool called anyway in the README's --read-only session: refused before it ran, halted.
    write = text(results["write"])
    assert results["write"].is_error and "write_in_read_session" in write, write
    assert results["written_read_only"] is False
    assert results["after"].is_error  # halted: nothing runs until a person allows it
    assert "filesystem__write_file" in results["rw_tools"] and "git__git_commit" not in results["rw_tools"]
    assert not results["rw_write"].is_error, text(results["rw_write"])
    assert (workspace / "notes.txt").read_text() == "hello"
    commit = text(results["rw_commit"])
    assert results["rw_commit"].is_error and "write_in_read_session" in commit, commit
    session = AgentSession.objects.get(pk=results["session"])
    assert session.environment.name == "development"
    poll(
        lambda: AuditEvent.objects.filter(session=session, server="time", tool="get_current_time").exists(),
        what="the time call's audit events",
    )
    # The "client registered" page offers the same gateway, ready to paste (token in a file, not args).
    admin = DjangoClient()
    admin.force_login(team.memberships.get(user__username="demo-admin").user)
    env = team.environments.get(name="development")
    code_agent = AgentRole.objects.get(team=team, name="code_agent")
    page = admin.post(
        "/governance/clients/add/", {"name": "laptop-2", "environment": env.pk, "roles": [code_agent.pk]}
    )
    html = page.content.decode()
    assert page.status_code == 200 and page["Cache-Control"] == "no-store", html[:500]
    mcp_json = re.search(r'<pre id="setup-mcp-json" tabindex="0">(.*?)</pre>', html, re.S).group(1)
    offered = json.loads(mcp_json.replace("&quot;", '"'))["mcpServers"]["governed"]
    assert offered["args"][offered["args"].index("--role") + 1] == "code_agent"
    assert "--token-file" in offered["args"] and not any(a.startswith("mcpgov_") for a in offered["args"])
    assert [a for a in offered["args"] if a.startswith("--")] == [
        a for a in server["args"] if a.startswith("--")
    ]
