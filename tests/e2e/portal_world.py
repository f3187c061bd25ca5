"""A team set up for the cross-component journeys: the `time` MCP server, an agent role allowed it,
bindings in development and production, a kill-switch flag, enforcement clients and their pinned keys.

Shared by tests/e2e and bench/killswitch_propagation.py. Writes through the services, so the
bundles the gateways fetch are the ones the portal really builds and signs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from governance.choices import RuleKind
from governance.models import Environment, Flag, McpTool
from governance.services.bundles import team_bundles_rebuild
from governance.services.clients import client_create
from governance.services.environments import binding_set
from governance.services.flags import flag_create
from governance.services.roles import role_create, role_server_add
from governance.services.servers import server_create
from governance.services.signing import jwks_document, signing_key_ensure
from portal.choices import TeamRole
from portal.models import Team as PortalTeam
from tests.factories import make_member, make_team

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
TIME_ARGS = ["-m", "mcp_server_time", "--local-timezone", "UTC"]
ROLE = "time_agent"
FLAG = "mcp.time.all"


@dataclass
class PortalWorld:
    team: object
    admin: object
    reviewer: object
    requester: object
    flag: Flag
    server: object
    role: object
    environments: dict[str, Environment]
    tokens: dict[str, list[str]] = field(default_factory=dict)

    def env(self, name: str) -> Environment:
        return self.environments[name]

    def issue(self, env_name: str, count: int = 1, prefix: str = "gw") -> list[str]:
        """Register `count` enforcement clients in `env_name`; returns their tokens."""
        tokens = []
        start = len(self.tokens.get(env_name, []))
        for i in range(count):
            issued = client_create(
                team=self.team,
                environment=self.env(env_name),
                name=f"{prefix}-{env_name[:3]}-{start + i:04d}",
            )
            tokens.append(issued.token)
        self.tokens.setdefault(env_name, []).extend(tokens)
        return tokens


def build_world(slug: str = "acme") -> PortalWorld:
    team = make_team(slug, slug.title())
    admin = make_member(team, TeamRole.ADMIN)
    reviewer = make_member(team, TeamRole.REVIEWER)
    requester = make_member(team, TeamRole.REQUESTER)
    server = server_create(
        team=team, actor=admin, slug="time", category="other", transport="stdio", command=PY, args=TIME_ARGS
    )
    # The tools as the server declares them (readOnlyHint), not pinned: calls are reads.
    for name in ("get_current_time", "convert_time"):
        McpTool.objects.create(server=server, name=name, read_only_hint=True, destructive_hint=False)
    role = role_create(team=team, actor=admin, name=ROLE)
    role_server_add(role=role, server=server, kind=RuleKind.ALLOWED, actor=admin)
    environments = {e.name: e for e in Environment.objects.filter(team=team)}
    for env in environments.values():
        binding_set(environment=env, server=server, actor=admin, target="local clock", permission="read_only")
    flag = flag_create(team=team, server=server, capability="all", name=FLAG, actor=admin)
    signing_key_ensure(team=team)
    team_bundles_rebuild(team_id=team.pk, reason="e2e set-up")
    return PortalWorld(
        team=team,
        admin=admin,
        reviewer=reviewer,
        requester=requester,
        flag=flag,
        server=server,
        role=role,
        environments=environments,
    )


def write_gateway_files(base: Path, team_slug: str = "acme") -> tuple[Path, Path]:
    """The pinned JWKS (saved from the portal, as an operator would) and the gateway's MCP config."""
    keys = base / "keys.json"
    keys.write_text(json.dumps(jwks_document(team=PortalTeam.objects.get(slug=team_slug))))
    config = base / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"time": {"command": PY, "args": TIME_ARGS}}}))
    return keys, config


def gateway_args(*, portal: str, token: str, keys: Path, config: Path, env: str, workdir: Path) -> list[str]:
    return [
        "-m",
        "mcpgov",
        "gateway",
        "--portal",
        portal,
        "--token",
        token,
        "--keys",
        str(keys),
        "--env",
        env,
        "--role",
        ROLE,
        "--config",
        str(config),
        "--spool",
        str(workdir / "spool"),
        "--state-dir",
        str(workdir / "state"),
    ]


class PortalBrowser:
    """A person using the portal over HTTP (session cookie + CSRF), the way the browser does it.

    Used to throw the kill switch or revoke a grant from the outside, so the write and its
    real-time notification happen inside the portal process, as in production.
    """

    def __init__(self, base_url: str, username: str, password: str) -> None:
        import requests

        self.base = base_url.rstrip("/")
        self.http = requests.Session()
        self.http.get(f"{self.base}/login/", timeout=60).raise_for_status()
        resp = self.http.post(
            f"{self.base}/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": self.csrf},
            headers={"Referer": f"{self.base}/login/"},
            timeout=60,
            allow_redirects=False,
        )
        if resp.status_code != 302:
            raise RuntimeError(f"login as {username} failed: {resp.status_code}")

    @property
    def csrf(self) -> str:
        return self.http.cookies.get("csrftoken", "")

    def post(self, path: str, data: dict) -> int:
        resp = self.http.post(
            f"{self.base}{path}",
            data={**data, "csrfmiddlewaretoken": self.csrf},
            headers={"Referer": f"{self.base}{path}"},
            timeout=60,
            allow_redirects=False,
        )
        if resp.status_code not in (200, 302):
            raise RuntimeError(f"POST {path} answered {resp.status_code}")
        return resp.status_code

    def close(self) -> None:
        self.http.close()
