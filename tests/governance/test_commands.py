"""The governance management commands: import_policy, export_policy, discover_tools, seed_demo."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import RequestFactory

from governance import models as gm
from governance.services.servers import server_create
from portal.models import ChangeRecord, Membership, Team
from tests.conftest import ROOT, _database_url
from tests.governance.test_policy_yaml import SEED, SEED_BLOCKS, SEED_FILE, body, canonical, snapshot


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def manage(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`manage.py` in a child process on the test database: real exit codes and streams."""
    env = {**os.environ, "DATABASE_URL": _database_url(), "CELERY_BROKER_URL": ""}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def everything() -> dict[str, object]:
    state = snapshot()
    state["users"] = sorted(get_user_model().objects.values_list("username", "password", "is_active"))
    state["memberships"] = sorted(
        Membership.objects.values_list("team__slug", "user__username", "role", "is_auditor")
    )
    state["teams"] = sorted(Team.objects.values_list("slug", "name"))
    state["servers"] = sorted(
        gm.McpServer.objects.values_list("slug", "category", "description", "known_risks", "command", "url"),
        key=str,
    )
    state["triggers"] = list(
        gm.TriggerSettings.objects.values_list(
            "team__slug", "cascade_write_threshold", "large_data_bytes", "production_url_words"
        )
    )
    return state


# --- import_policy / export_policy ------------------------------------------------------------


def test_import_policy_prints_the_report_and_imports(team):
    out = run("import_policy", str(SEED_FILE), "--team", "acme")
    assert out.splitlines()[0] == "Imported mcp_access, environments, rate_limits into team acme."
    assert "+ role code_agent: allowed_servers [filesystem_read_only, github_api]; " in out
    assert out.splitlines()[-1] == "In all: 23 added, 4 changed, 0 removed."
    policy_text = run("export_policy", "--team", "acme")
    assert yaml.safe_load(body(policy_text)) == canonical(yaml.safe_load(SEED_BLOCKS))  # canonical order
    assert policy_text.startswith("# MCP governance policy of team acme")
    # Imported by the system (no user): the history says so.
    assert ChangeRecord.objects.get(team=team, action="import").who == "system"


def test_import_policy_dry_run_writes_nothing(team):
    before = snapshot()
    out = run("import_policy", str(SEED_FILE), "--team", "acme", "--dry-run")
    assert out.startswith(
        "Dry run of an import of mcp_access, environments, rate_limits into team acme: nothing was saved."
    )
    assert "Would be: 23 added, 4 changed, 0 removed." in out
    assert snapshot() == before


def test_import_policy_twice_reports_no_changes(team):
    run("import_policy", str(SEED_FILE), "--team", "acme")
    out = run("import_policy", str(SEED_FILE), "--team", "acme")
    assert out.splitlines()[1] == "No changes: the team's policy already matches the file."


def test_import_policy_reads_standard_input(team, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("rate_limits:\n  global:\n    max_calls_per_minute: 12\n"))
    out = run("import_policy", "-", "--team", "acme")
    assert "~ global rate limits: max_calls_per_minute none -> 12" in out
    assert gm.GlobalRateLimit.objects.get(team=team).max_calls_per_minute == 12


def test_import_policy_errors_name_the_line_and_change_nothing(team, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEED.replace("pause_at_percent: 80", "pause_at_percent: 180"))
    before = snapshot()
    with pytest.raises(CommandError) as raised:
        run("import_policy", str(bad), "--team", "acme")
    line = next(i for i, text in enumerate(SEED.splitlines(), 1) if "pause_at_percent" in text)
    assert str(raised.value) == (
        f"{bad} was not imported, nothing changed:\nline {line}: rate_limits.global.pause_at_percent: 180 is "
        "not valid: Ensure this value is less than or equal to 100."
    )
    with pytest.raises(CommandError, match="No team with slug 'nope' \\(teams: acme\\)"):
        run("import_policy", str(SEED_FILE), "--team", "nope")
    with pytest.raises(CommandError, match=r"Cannot read .*missing\.yaml"):
        run("import_policy", str(tmp_path / "missing.yaml"), "--team", "acme")
    assert snapshot() == before


@pytest.mark.slow
def test_commands_exit_codes_and_streams(transactional_db, team, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mcp_access:\n  default: allow\n  roles: {}\n")
    result = manage("import_policy", str(bad), "--team", "acme")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"CommandError: {bad} was not imported, nothing changed:\nline 2: mcp_access.default: the default must "
        "be deny (anything not allowed is refused), got 'allow'\n"
    )

    result = manage("import_policy", "-", "--team", "acme", stdin=SEED)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[-1] == "In all: 23 added, 4 changed, 0 removed."

    result = manage("export_policy", "--team", "acme")
    assert (result.returncode, result.stderr) == (0, "")
    assert yaml.safe_load(body(result.stdout)) == canonical(yaml.safe_load(SEED_BLOCKS))
    assert yaml.safe_load(result.stdout) == canonical(yaml.safe_load(SEED))

    result = manage("export_policy", "--team", "nope")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "CommandError: No team with slug 'nope' (teams: acme).\n"


# --- discover_tools ---------------------------------------------------------------------------


@pytest.mark.slow
def test_discover_tools_lists_the_tools_with_their_class(team, settings):
    settings.MCPGOV_PORTAL_STDIO_DISCOVERY = "sandbox"  # a stdio command runs only in the sandbox
    server_create(
        team=team, slug="time", transport="stdio", command=sys.executable, args=["-m", "mcp_server_time"]
    )
    out = run("discover_tools", "--team", "acme", "--server", "time")
    assert out.splitlines() == [
        "time: 2 tools (added: get_current_time, convert_time).",
        "  convert_time      read",
        "  get_current_time  read",
    ]


def test_discover_tools_failure_is_a_command_error(team):
    server_create(team=team, slug="ghost", transport="stdio", command="/nonexistent/mcp")
    before = snapshot()
    with pytest.raises(
        CommandError,
        match=re.escape(
            "Discovery of ghost failed, nothing changed: ghost is a stdio server: the portal does not start "
            "team commands."
        ),
    ):
        run("discover_tools", "--team", "acme", "--server", "ghost")
    with pytest.raises(CommandError, match="Team acme has no server 'nope' \\(servers: ghost\\)"):
        run("discover_tools", "--team", "acme", "--server", "nope")
    assert snapshot() == before


# --- seed_demo --------------------------------------------------------------------------------


@pytest.fixture
def workspace():
    # a neutral prefix: the development environment refuses paths with "live" or "prod" in them
    base = Path(tempfile.mkdtemp(prefix="mcpgov-demo-"))
    yield base / "workspace"
    shutil.rmtree(base, ignore_errors=True)


def test_seed_demo_twice_is_idempotent(db, workspace):
    first = run("seed_demo", "--no-discover", "--workspace", str(workspace))
    state = everything()
    second = run("seed_demo", "--no-discover", "--workspace", str(workspace))
    assert everything() == state
    runnable = 3 if (ROOT / "node_modules" / ".bin" / "mcp-server-filesystem").exists() else 2
    # the seed's 23 additions, plus each runnable server on code_agent's list and bound in development
    assert (
        first.splitlines()[0] == f"Seed policy: In all: {23 + 2 * runnable - 1} added, 4 changed, 0 removed."
    )
    assert second.splitlines()[0] == "Seed policy: No changes: the team's policy already matches the file."
    for username in ("demo-admin", "demo-reviewer", "demo-requester", "demo-viewer"):
        assert f"  {username}" in second

    team = Team.objects.get(slug="demo")
    assert team.name == "Demo Team"
    roles = dict(Membership.objects.filter(team=team).values_list("user__username", "role"))
    assert roles == {
        "demo-admin": "admin",
        "demo-reviewer": "reviewer",
        "demo-requester": "requester",
        "demo-viewer": "viewer",
    }
    assert Membership.objects.get(team=team, user__username="demo-admin").is_auditor
    assert (
        authenticate(RequestFactory().post("/login/"), username="demo-viewer", password="demo-password-1")
        is not None
    )
    # The team's policy is the seed's (in canonical order), plus the runnable servers for code_agent
    # in development.
    exported = yaml.safe_load(body(run("export_policy", "--team", "demo")))
    expected = yaml.safe_load(SEED_BLOCKS)
    slugs = ["time", "git", "filesystem"][:runnable]
    expected["mcp_access"]["roles"]["code_agent"]["allowed_servers"] += slugs
    expected["environments"]["development"]["allowed_servers"] += [
        {
            "name": slug,
            "path": "local clock" if slug == "time" else str(workspace.resolve()),
            "permissions": "read_write" if slug == "filesystem" else "read_only",
        }
        for slug in slugs
    ]
    assert exported == canonical(expected)
    assert (workspace / "README.md").exists() and (workspace / ".git").is_dir()
    # Catalogue details and a runnable transport for the time server.
    github = gm.McpServer.objects.get(team=team, slug="github_api")
    assert github.category == "api" and github.known_risks and github.description
    time_server = gm.McpServer.objects.get(team=team, slug="time")
    assert (time_server.command, time_server.args) == (sys.executable, ["-m", "mcp_server_time"])
    assert gm.TriggerSettings.objects.get(team=team).production_url_words == [
        "prod",
        "production",
        "live",
        "main",
    ]
    # The seed's Unleash flags, each on in every environment.
    flags = dict(gm.Flag.objects.filter(team=team).values_list("name", "server__slug"))
    assert flags == {
        "mcp.filesystem.write": "local_filesystem",
        "mcp.shell.execute": "shell_execution",
        "mcp.database.write": "database_write",
        "mcp.github.api": "github_api",
        "mcp.cloud.infra": "cloud_infrastructure",
    }
    assert gm.FlagState.objects.filter(flag__team=team, enabled=True).count() == 5 * 3


def test_seed_demo_repairs_a_changed_demo_password(db, workspace):
    run("seed_demo", "--no-discover", "--workspace", str(workspace))
    user = get_user_model().objects.get(username="demo-reviewer")
    user.set_password("something-else")
    user.save()
    run("seed_demo", "--no-discover", "--workspace", str(workspace))
    assert (
        authenticate(RequestFactory().post("/login/"), username="demo-reviewer", password="demo-password-1")
        is not None
    )


@pytest.mark.slow
def test_seed_demo_discovers_the_runnable_servers_once(db, workspace):
    out = run("seed_demo", "--workspace", str(workspace))
    assert "Discovered 2 tools of time." in out
    team = Team.objects.get(slug="demo")
    assert set(
        gm.McpTool.objects.filter(server__team=team, server__slug="time").values_list("name", flat=True)
    ) == {"get_current_time", "convert_time"}
    commit = gm.McpTool.objects.get(server__team=team, server__slug="git", name="git_commit")
    assert commit.access_class == "write"
    write = gm.McpTool.objects.get(server__team=team, server__slug="filesystem", name="write_file")
    read = gm.McpTool.objects.get(server__team=team, server__slug="filesystem", name="read_text_file")
    assert (write.access_class, read.access_class) == ("write", "read")
    state = everything()
    out = run("seed_demo", "--workspace", str(workspace))
    assert "Discovered" not in out
    assert everything() == state
