"""The environment gate looks at what a server reaches, not where its program lives.

Production words and forbidden patterns apply to the URL, the binding target, and the paths and
connection strings a server is given; never to the command, the script or module it runs, or files
under ``node_modules`` / ``site-packages``. Proved on the pure gate and with the project itself under
folders named ``main`` and ``prod-tools`` (a common worktree name, and an unlucky tools folder).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from mcpgov.config import UpstreamConfig, server_targets
from mcpgov.gate import environment_gate
from tests.mcpgov.conftest import PY, ROOT
from tests.mcpgov.helpers import make_bundle

NODE = shutil.which("node") or "node"
PROJECT = "/home/dev/main/prod-tools"


@pytest.mark.parametrize(
    ("command", "args", "env", "targets"),
    [
        (
            PY,
            [f"{PROJECT}/server.py", "--db", "postgres://db.prod.internal/x"],
            {},
            ["postgres://db.prod.internal/x"],
        ),
        (PY, ["-m", "mcp_server_time", "--local-timezone", "UTC"], {}, ["UTC"]),
        (
            NODE,
            [f"{PROJECT}/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js", "/srv/docs"],
            {},
            ["/srv/docs"],
        ),
        ("npx", ["-y", "@acme/prod-mcp", "/srv/docs"], {}, ["/srv/docs"]),
        (
            "uv",
            ["run", "--directory", PROJECT, "server.py", "--dsn=mysql://live-db/x"],
            {},
            ["mysql://live-db/x"],
        ),
        ("uvx", ["--from", "prod-tools", "mcp-server-git", "--repository", "/srv/repo"], {}, ["/srv/repo"]),
        (
            f"{PROJECT}/bin/server",
            ["/data/production"],
            {"DATABASE_URL": "postgres://main.db/x", "TOKEN": "main"},
            ["/data/production", "postgres://main.db/x"],
        ),
    ],
)
def test_targets_are_what_the_server_reaches(command, args, env, targets):
    assert server_targets(command, tuple(args), env, None, None) == targets


def _gate(upstreams: dict[str, UpstreamConfig]):
    bundle = make_bundle()
    return environment_gate(bundle, "code_agent", upstreams, now=bundle.issued_at.timestamp() + 60)


def test_a_development_server_under_main_and_prod_tools_passes_the_gate():
    up = UpstreamConfig(slug="time", command=PY, args=(f"{PROJECT}/server.py", "--local-timezone", "UTC"))
    fs = UpstreamConfig(
        slug="filesystem",
        command=NODE,
        args=(f"{PROJECT}/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js", "/tmp/work"),
    )
    assert _gate({"time": up, "filesystem": fs}) == []


def test_a_production_connection_string_argument_fires_trigger_3():
    up = UpstreamConfig(
        slug="time", command=PY, args=("/tmp/x/server.py", "--db", "postgres://db.prod.internal/x")
    )
    violations = _gate({"time": up})
    assert {v.server for v in violations} == {"time"}
    reasons = " | ".join(v.reason for v in violations)
    assert "'postgres://db.prod.internal/x' matches forbidden pattern '*prod*'" in reasons
    assert "looks like production (words: prod)" in reasons


def test_production_words_in_an_argument_need_a_grant():
    bundle = make_bundle(
        environment_policy={**make_bundle().environment_policy.model_dump(), "forbidden_patterns": []}
    )
    up = UpstreamConfig(
        slug="time", command=PY, args=("/tmp/x/server.py", "--dsn", "postgres://main.db.internal/x")
    )
    [violation] = environment_gate(bundle, "code_agent", {"time": up}, now=bundle.issued_at.timestamp() + 60)
    assert "looks like production (words: main)" in violation.reason


SERVER_PY = "import runpy\nrunpy.run_module('mcp_server_time', run_name='__main__')\n"


@pytest.fixture
def project() -> Path:
    """A development project checked out under .../main/prod-tools/, with its own node_modules."""
    base = Path(tempfile.mkdtemp(prefix="mcpgov-gate-"))
    project = base / "main" / "prod-tools"
    project.mkdir(parents=True)
    (project / "server.py").write_text(SERVER_PY)
    (project / "node_modules").symlink_to(ROOT / "node_modules")
    (base / "data").mkdir()
    try:
        yield project
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.usefixtures("filesystem_server")
def test_the_gateway_serves_a_project_under_main_and_prod_tools(world, project):
    data = project.parent.parent / "data"
    doc = world.doc()
    doc["environment_policy"]["bindings"]["filesystem"]["target"] = str(data)
    world.write_bundle(doc)
    script = project / "node_modules" / "@modelcontextprotocol" / "server-filesystem" / "dist" / "index.js"
    config = project / ".mcp.json"
    servers = {
        "time": {"command": PY, "args": [str(project / "server.py"), "--local-timezone", "UTC"]},
        "filesystem": {"command": NODE, "args": [str(script), str(data)]},
    }
    config.write_text(json.dumps({"mcpServers": servers}))
    args = [a if a != str(world.config_path) else str(config) for a in world.gateway_args("--read-write")]

    gate = [PY, "-m", "mcpgov", "gate", *args[3:]]
    gate = [a for a in gate if a not in ("--spool", str(world.spool), "--read-write")]
    r = subprocess.run(gate, cwd=project, capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    assert "MCP environment gate passed" in r.stderr

    async def scenario():
        async with Client(StdioServerParameters(command=PY, args=args, cwd=str(project)), mode="legacy") as c:
            r = await c.call_tool("filesystem__write_file", {"path": str(data / "a.txt"), "content": "ok"})
            assert not r.is_error, r.content
            r = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert not r.is_error, r.content

    anyio.run(scenario)
    assert (data / "a.txt").read_text() == "ok"

    # the same project given a production database as an argument is refused at the gate
    servers["time"]["args"] += ["--db", "postgres://db.prod.internal/x"]
    config.write_text(json.dumps({"mcpServers": servers}))
    r = subprocess.run(gate, cwd=project, capture_output=True, text=True, timeout=90)
    assert r.returncode == 1
    assert (
        "✗ time: configured target 'postgres://db.prod.internal/x' matches forbidden pattern '*prod*'"
        in r.stderr
    )
    assert "✓ filesystem" in r.stderr
    r = subprocess.run(
        [PY, *args], cwd=project, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL
    )
    assert r.returncode == 3 and "✗ time:" in r.stderr
