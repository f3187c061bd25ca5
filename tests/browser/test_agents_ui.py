"""The Agents page in a real browser: an admin registers a headless agent and copies its secret (shown
once, and it really gets a token), rebinds it, issues an API key, and revokes it after confirming; a
viewer reads the same pages without a single control."""

from __future__ import annotations

import base64
import re
import urllib.parse

import pytest
import requests
from playwright.sync_api import expect

from governance.models import Agent, AgentRole
from tests.conftest import login

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def roles(live_server, transactional_db, team):
    return [AgentRole.objects.create(team=team, name=n) for n in ("code_agent", "docs_agent")]


def token_for(base: str, client_id: str, secret: str) -> requests.Response:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return requests.post(
        f"{base}/oauth/token/",
        data=urllib.parse.urlencode(
            {"grant_type": "client_credentials", "resource": "http://127.0.0.1:8765/mcp"}
        ),
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )


def test_admin_registers_rebinds_keys_and_revokes_an_agent(live_server, page, admin, roles):
    base = live_server.url
    login(page, base, admin.username)
    page.get_by_role("link", name="Agents", exact=True).click()
    expect(page.locator("h1")).to_contain_text("Agents")
    page.get_by_role("link", name="Register an agent").click()
    page.fill("#id_name", "Nightly CI")
    page.fill("#id_slug", "nightly-ci")
    page.get_by_label("code_agent").check()
    page.get_by_label("development").check()
    page.get_by_role("button", name="Register").click()

    expect(page.locator("h1")).to_have_text("Agent nightly-ci registered")
    client_id = page.locator("#agent-client-id").inner_text()
    secret = page.locator("#agent-client-secret").inner_text()
    assert len(secret) > 30
    response = token_for(base, client_id, secret)
    assert response.status_code == 200, response.text

    page.get_by_role("link", name="Go to the agent").click()
    expect(page.locator(".agent-roles")).to_have_text("code_agent")
    assert secret not in page.content()  # shown once, never again

    page.get_by_role("link", name="Edit").click()
    page.get_by_label("docs_agent").check()
    page.get_by_label("staging").check()
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#messages")).to_contain_text("Agent nightly-ci saved")
    expect(page.locator(".agent-roles")).to_have_text(re.compile(r"code_agent\s+docs_agent"))
    expect(page.locator(".agent-environments")).to_contain_text("staging")

    page.get_by_role("button", name="Issue an API key").click()
    key = page.locator("#agent-api-key").inner_text()
    assert key.startswith("mcpgov_agent_")
    page.get_by_role("link", name="Back to the agent").click()
    expect(page.locator("table.agent-keys")).to_contain_text(key.split("_")[2])

    # Revoking asks first: dismissing changes nothing, accepting is the kill switch.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Revoke nightly-ci").click()
    assert Agent.objects.get(slug="nightly-ci").revoked_at is None
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke nightly-ci").click()
    expect(page.locator("#messages")).to_contain_text("Agent nightly-ci revoked")
    expect(page.locator("h1")).to_contain_text("revoked")
    assert Agent.objects.get(slug="nightly-ci").revoked_at is not None
    assert token_for(base, client_id, secret).status_code == 401
    expect(page.get_by_role("button", name="Issue an API key")).to_have_count(0)


def test_a_viewer_reads_the_agents_without_controls(live_server, page, viewer, roles, team):
    from governance.services.agents import agent_create

    agent_create(
        team=team,
        name="CI",
        slug="ci-bot",
        roles=roles[:1],
        environments=[team.environments.get(name="development")],
    )
    login(page, live_server.url, viewer.username)
    page.get_by_role("link", name="Agents", exact=True).click()
    expect(page.locator("table.agents")).to_contain_text("ci-bot")
    expect(page.get_by_role("link", name="Register an agent")).to_have_count(0)
    page.get_by_role("link", name="ci-bot").click()
    expect(page.locator(".agent-roles")).to_have_text("code_agent")
    expect(page.locator("main form[method=post], form.inline")).to_have_count(0)
    expect(page.get_by_role("link", name="Edit")).to_have_count(0)
