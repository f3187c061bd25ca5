"""A real OpenID Connect provider (the certified `oidc-provider` from npm, tests/sso/oidc_provider.mjs)
and the portal configured to use it, each in its own process on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, run_portal, spawn, wait_for_port

PROVIDER_SCRIPT = Path(__file__).with_name("oidc_provider.mjs")
CLIENT_ID = "mcpgov-portal"
CLIENT_SECRET = "sso-test-client-secret-0123456789"
TEAM_ROLE_MAP = "mcp-acme-admins=acme:admin,mcp-acme-reviewers=acme:reviewer,mcp-globex-viewers=globex:viewer"


@dataclass
class OidcProvider:
    issuer: str
    users_file: Path

    def set_user(self, login: str, *, groups: list[str], username: str | None = None, **claims) -> None:
        """Create or change the provider's account `login` (its `sub`); read at the next login."""
        users = json.loads(self.users_file.read_text()) if self.users_file.exists() else {}
        users[login] = {
            "preferred_username": username or login,
            "email": f"{login}@corp.example",
            "email_verified": True,
            "name": login.title(),
            "groups": groups,
            **claims,
        }
        self.users_file.write_text(json.dumps(users))

    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"


@contextlib.contextmanager
def run_oidc_provider(tmp_path: Path, portal_base: str):
    if not (ROOT / "node_modules" / "oidc-provider").exists():
        pytest.fail("node_modules/oidc-provider is missing: run `make upstreams` (npm install).")
    port = free_port()
    provider = OidcProvider(issuer=f"http://127.0.0.1:{port}", users_file=tmp_path / f"idp-users-{port}.json")
    provider.users_file.write_text("{}")
    client = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [f"{portal_base}/sso/callback/"],
        "post_logout_redirect_uris": [f"{portal_base}/login/"],
    }
    env = {
        **os.environ,
        "OIDC_TEST_ISSUER": provider.issuer,
        "OIDC_TEST_CLIENT": json.dumps(client),
        "OIDC_TEST_USERS_FILE": str(provider.users_file),
        "NODE_NO_WARNINGS": "1",
    }
    proc = spawn(["node", str(PROVIDER_SCRIPT)], cwd=ROOT, env=env)
    try:
        wait_for_port(proc, port, "oidc-provider")
        yield provider
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def sso_env(provider: OidcProvider, **overrides: str) -> dict[str, str]:
    return {
        "OIDC_ISSUER": provider.issuer,
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "OIDC_PROVIDER_NAME": "Corp IdP",
        "OIDC_TEAM_ROLE_MAP": TEAM_ROLE_MAP,
        "OIDC_VERIFY_SSL": "1",
        **overrides,
    }


@pytest.fixture
def sso_world(transactional_db, tmp_path):
    """Start the provider and the portal pointed at it: a function `start(**env_overrides)`
    returning (portal base URL, provider). Everything stops at the end of the test."""
    stack = contextlib.ExitStack()

    def start(*, foreign_jwks: bool = False, **overrides: str):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        provider = stack.enter_context(run_oidc_provider(tmp_path, base))
        if foreign_jwks:  # the portal trusts another provider's keys: every ID token must fail
            other = stack.enter_context(run_oidc_provider(tmp_path, base))
            overrides["OIDC_JWKS_ENDPOINT"] = other.jwks_url()
        stack.enter_context(run_portal(port, sso_env(provider, **overrides)))
        return base, provider

    with stack:
        yield start
