"""`manage.py seed_demo`: the demo team, its users and the seed's policy. Safe to run again (`make run` does).

Demo logins (password `demo-password-1` for all, team "Demo Team", slug `demo`):

- demo-admin      admin, also auditor (sees audit payloads)
- demo-reviewer   reviewer
- demo-requester  requester
- demo-viewer     viewer

The policy is governance/fixtures/seed_policy.yaml (the seed's mcp_access, environments and
rate_limits blocks) imported through policy_import; the catalogue gets descriptions and known
risks. So that the README's gateway example runs as shipped, the servers that really run here
(mcp-server-time, mcp-server-git, and npm's server-filesystem once `make` installed it) get a stdio
command, are added to `code_agent`'s allowlist and bound in `development` on a demo workspace
(`var/demo-workspace`, a git repository of its own, never the portal's checkout): time read-only,
git read-only (its commit and branch tools halt the session: write in a read-only binding),
filesystem read-write (its write tools halt a `--read-only` session; the seed's per-server limits
apply). Their tools are discovered once.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import yaml
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from governance.choices import (
    DEFAULT_CASCADE_WRITE_THRESHOLD,
    DEFAULT_LARGE_DATA_BYTES,
    DEFAULT_PRODUCTION_URL_WORDS,
)
from governance.models import Flag, McpServer
from governance.services.discovery import DiscoveryError, tool_spec
from governance.services.flags import flag_create
from governance.services.limits import trigger_settings_set
from governance.services.policy_yaml import policy_import
from governance.services.servers import server_create, server_tools_record, server_update
from governance.services.teams import team_bootstrap
from mcpgov.config import UpstreamConfig
from mcpgov.discover import list_server_tools, tool_definition
from portal.choices import TeamRole
from portal.models import Team
from portal.services import membership_set, user_create

TEAM_SLUG, TEAM_NAME = "demo", "Demo Team"
PASSWORD = "demo-password-1"  # noqa: S105 - documented demo login
USERS = (
    ("demo-admin", TeamRole.ADMIN, True),
    ("demo-reviewer", TeamRole.REVIEWER, False),
    ("demo-requester", TeamRole.REQUESTER, False),
    ("demo-viewer", TeamRole.VIEWER, False),
)
POLICY_FILE = Path(__file__).resolve().parents[2] / "fixtures" / "seed_policy.yaml"
DEMO_ROLE, DEMO_ENV = "code_agent", "development"
# The runnable servers' development bindings: (permission, target); None = the workspace path.
DEMO_BINDINGS = {
    "time": ("read_only", "local clock"),
    "git": ("read_only", None),
    "filesystem": ("read_write", None),
}


def default_workspace() -> Path:
    return Path(settings.BASE_DIR) / "var" / "demo-workspace"


def workspace_ensure(workspace: Path) -> None:
    """The directory the demo's filesystem and git servers work on: a file to read, and a git
    repository with one commit (made once; an existing workspace is left as it is)."""
    workspace.mkdir(parents=True, exist_ok=True)
    readme = workspace / "README.md"
    if not readme.exists():
        readme.write_text(
            "# Demo workspace\n\nThe demo's filesystem and git MCP servers work here. Ask an agent to read this "
            "file (allowed), then to write one (halts a read-only session).\n",
            encoding="utf-8",
        )
    git = shutil.which("git")
    if git and not (workspace / ".git").exists():
        who = [
            "-c",
            "user.name=MCP Governance demo",
            "-c",
            "user.email=demo@example.com",
            "-c",
            "commit.gpgsign=false",
        ]
        for command in (["init", "-q"], ["add", "README.md"], [*who, "commit", "-q", "-m", "Demo workspace"]):
            subprocess.run([git, "-C", str(workspace), *command], check=True, capture_output=True, timeout=30)


def demo_policy_text(runnable: dict[str, dict[str, Any]], workspace: Path) -> str:
    """The seed's policy plus what makes the README's example run: the runnable servers on
    code_agent's allowlist and bound in development."""
    doc = yaml.safe_load(POLICY_FILE.read_text(encoding="utf-8"))
    slugs = [slug for slug in DEMO_BINDINGS if slug in runnable]
    role = doc["mcp_access"]["roles"][DEMO_ROLE]
    role["allowed_servers"] = [*role["allowed_servers"], *slugs]
    bindings = doc["environments"][DEMO_ENV]["allowed_servers"]
    for slug in slugs:
        permission, target = DEMO_BINDINGS[slug]
        bindings.append({"name": slug, "path": target or str(workspace), "permissions": permission})
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


# Catalogue details the YAML shape does not carry.
CATALOGUE: dict[str, dict[str, Any]] = {
    "filesystem_read_only": {
        "category": "filesystem",
        "description": "Reads files and lists directories under the project root.",
        "known_risks": "Can read any file the process can: .env files, keys and tokens leave through the agent.",
    },
    "filesystem_write": {
        "category": "filesystem",
        "description": "Creates, edits, moves and deletes files under the project root.",
        "known_risks": "Overwrites source and configuration; can plant code that runs later (hooks, CI files).",
    },
    "filesystem": {
        "category": "filesystem",
        "description": "The shared filesystem server: read and write, counted separately by the rate limits.",
        "known_risks": "Write calls change the working tree; bulk reads can exfiltrate the repository.",
    },
    "github_api": {
        "category": "api",
        "description": "GitHub API: issues, pull requests, branches and repository contents.",
        "known_risks": "Pushes or merges to protected branches; private code pasted into public issues; "
        "API quota exhaustion in loops.",
        "cost_per_call": Decimal("0.0010"),
    },
    "shell_execution": {
        "category": "shell_execution",
        "description": "Runs shell commands on the agent's host.",
        "known_risks": "Arbitrary command execution with the agent's credentials. Forbidden to every seed role.",
    },
    "database_read_only": {
        "category": "database",
        "description": "SELECT queries against a read replica.",
        "known_risks": "Personal data in results; unbounded queries load the replica (rows capped at 10,000).",
    },
    "database_write": {
        "category": "database",
        "description": "INSERT, UPDATE and DELETE against the primary database.",
        "known_risks": "Irreversible data changes; a WHERE-less UPDATE rewrites a whole table.",
    },
    "cloud_infrastructure": {
        "category": "cloud_infrastructure",
        "description": "Cloud control plane: compute, networking, storage and IAM.",
        "known_risks": "Deletes infrastructure, opens networks, escalates IAM privileges, runs up costs.",
        "cost_per_call": Decimal("0.0050"),
    },
    "local_filesystem": {
        "category": "filesystem",
        "description": "The developer's checkout (development environment).",
        "known_risks": "Read-write in development: uncommitted work can be overwritten.",
    },
    "local_database": {
        "category": "database",
        "description": "The developer's local PostgreSQL (development environment).",
        "known_risks": "Low: local data only, but credentials may be reused elsewhere.",
    },
    "staging_filesystem": {
        "category": "filesystem",
        "description": "Staging checkout, read only.",
        "known_risks": "Staging configuration files may hold shared secrets.",
    },
    "staging_database": {
        "category": "database",
        "description": "Staging PostgreSQL, read only.",
        "known_risks": "Staging often holds copies of production data.",
    },
}


def runnable_servers(workspace: Path | None = None) -> dict[str, dict[str, Any]]:
    """Servers installed here: the PyPI ones started with this interpreter (portable, no uvx), npm's
    filesystem server when `make` installed node_modules. git and filesystem work on `workspace`."""
    workspace = workspace or default_workspace()
    servers = {
        "time": {
            "category": "other",
            "name": "Time",
            "description": "Current time and time-zone conversion (mcp-server-time from PyPI).",
            "known_risks": "None known: both tools are read-only and touch nothing outside the process.",
            "transport": "stdio",
            "command": sys.executable,
            "args": ["-m", "mcp_server_time"],
        },
    }
    if shutil.which("git"):
        servers["git"] = {
            "category": "other",
            "name": "Git",
            "description": f"Git on the demo workspace ({workspace}) via mcp-server-git from PyPI.",
            "known_risks": "git_add, git_commit, git_checkout and git_create_branch change the repository; "
            "git_reset discards staged work. Bound read-only in development: those tools halt the session.",
            "transport": "stdio",
            "command": sys.executable,
            "args": ["-m", "mcp_server_git", "--repository", str(workspace)],
        }
    filesystem = Path(settings.BASE_DIR) / "node_modules" / ".bin" / "mcp-server-filesystem"
    if filesystem.exists() and shutil.which("node"):
        servers["filesystem"] = {
            **CATALOGUE["filesystem"],
            "name": "Filesystem",
            "description": f"Reads and writes files in the demo workspace ({workspace}) via npm's "
            "@modelcontextprotocol/server-filesystem; reads and writes are counted separately by the rate limits.",
            "transport": "stdio",
            "command": str(filesystem),
            "args": [str(workspace)],
        }
    return servers


# The seed's Unleash example: one kill switch per risky server capability.
DEMO_FLAGS = (
    ("mcp.filesystem.write", "local_filesystem", "write"),
    ("mcp.shell.execute", "shell_execution", "all"),
    ("mcp.database.write", "database_write", "write"),
    ("mcp.github.api", "github_api", "all"),
    ("mcp.cloud.infra", "cloud_infrastructure", "all"),
)


class Command(BaseCommand):
    help = (
        f"Create or update the demo team '{TEAM_SLUG}', its four users (password {PASSWORD}) and the seed's "
        "policy. Idempotent."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--workspace",
            type=Path,
            default=None,
            help="Directory the demo's git and filesystem servers work on (default var/demo-workspace).",
        )
        parser.add_argument(
            "--no-discover",
            action="store_true",
            help="Do not connect to the runnable demo servers for their tools.",
        )

    def handle(self, *args, no_discover: bool = False, workspace: Path | None = None, **options):
        workspace = (workspace or default_workspace()).resolve()
        workspace_ensure(workspace)
        runnable = runnable_servers(workspace)
        with transaction.atomic():
            team = Team.objects.filter(slug=TEAM_SLUG).first() or team_bootstrap(
                slug=TEAM_SLUG, name=TEAM_NAME
            )
            for username, role, is_auditor in USERS:
                membership_set(team=team, user=self.demo_user(username), role=role, is_auditor=is_auditor)
            report = policy_import(team=team, text=demo_policy_text(runnable, workspace))
            catalogue = {**CATALOGUE, **runnable}
            for slug, details in catalogue.items():
                server = McpServer.objects.filter(team=team, slug=slug).first()
                if server is None:
                    server_create(team=team, slug=slug, **details)
                else:
                    server_update(server=server, **details)
            for flag_name, slug, capability in DEMO_FLAGS:
                server = McpServer.objects.filter(team=team, slug=slug).first()
                exists = Flag.objects.filter(team=team, name=flag_name).exists()
                if server is not None and not exists:
                    flag_create(
                        team=team,
                        server=server,
                        capability=capability,
                        name=flag_name,
                        description="Kill switch from the seed's Unleash example.",
                    )
            trigger_settings_set(
                team=team,
                cascade_write_threshold=DEFAULT_CASCADE_WRITE_THRESHOLD,
                large_data_bytes=DEFAULT_LARGE_DATA_BYTES,
                production_url_words=list(DEFAULT_PRODUCTION_URL_WORDS),
            )
        self.stdout.write(f"Seed policy: {report.lines[-1]}")
        if not no_discover:
            self.discover(team, runnable)
        self.stdout.write(self.style.SUCCESS(f'Demo team "{team.name}" ({team.slug}) is ready. Logins:'))
        for username, role, is_auditor in USERS:
            self.stdout.write(f"  {username:<15} {PASSWORD}  {role}{' + auditor' if is_auditor else ''}")

    def demo_user(self, username: str):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            return user_create(username=username, password=PASSWORD, email=f"{username}@example.com")
        if not user.check_password(PASSWORD) or not user.is_active:
            user.set_password(PASSWORD)
            user.is_active = True
            user.save(update_fields=["password", "is_active"])
        return user

    def discover(self, team: Team, runnable: dict[str, dict[str, Any]]) -> None:
        """Tools of the runnable servers, once: outside the transaction, and a failure only warns."""
        for server in McpServer.objects.filter(
            team=team, slug__in=list(runnable), tools_discovered_at__isnull=True
        ):
            try:
                report = _discover_own_command(server, runnable[server.slug])
            except DiscoveryError as exc:
                self.stderr.write(f"Warning: could not discover the tools of {server.slug}: {exc}")
                continue
            self.stdout.write(f"Discovered {len(report['added'])} tools of {server.slug}.")


def _discover_own_command(server: McpServer, own: dict[str, Any]) -> dict[str, list[str]]:
    """The demo servers' commands are this module's own (runnable_servers), not a team's: the
    operator's `seed_demo` lists them here the way `mcpgov discover` does on the enforcement side.
    (A team's stdio command is never started by the portal; see governance/services/discovery.py.)"""
    # `own` is runnable_servers()' entry, never the stored command, which a team admin may edit.
    config = UpstreamConfig(slug=server.slug, command=own["command"], args=tuple(own["args"]))
    try:
        tools = anyio.run(lambda: list_server_tools(config, timeout=30))
    except Exception as exc:
        raise DiscoveryError(f"{type(exc).__name__}: {exc}") from exc
    return server_tools_record(server=server, tools=[tool_spec(tool_definition(t)) for t in tools])
