"""Journeys through the admin UI in a real browser: an admin edits an allowlist in place, a viewer
can neither see nor use the controls, an admin imports a YAML policy."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from governance.choices import RuleKind
from governance.models import AgentRole, RoleServerRule
from governance.services.roles import role_create, role_server_add
from governance.services.servers import server_create
from tests.conftest import login

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def role_with_servers(live_server, transactional_db, team):
    github = server_create(team=team, slug="github_api", transport="http", url="https://api.github.com/mcp")
    server_create(team=team, slug="filesystem", command="npx")
    role = role_create(team=team, name="code_agent")
    role_server_add(role=role, server=github, kind=RuleKind.ALLOWED)
    return role


def allowed(role) -> list[str]:
    return role.server_slugs(RuleKind.ALLOWED)


def test_admin_adds_and_removes_an_allowed_server_in_place(live_server, page, admin, role_with_servers):
    role = role_with_servers
    login(page, live_server.url, admin.username)
    page.goto(f"{live_server.url}/governance/roles/{role.pk}/")
    allowed_list = page.locator("#allowed-servers table")
    expect(allowed_list).to_contain_text("github_api")
    expect(allowed_list).not_to_contain_text("filesystem")

    page.select_option("#id_allowed_server", label="filesystem")
    page.get_by_role("button", name="Add to allowed").click()
    expect(page.locator("#messages")).to_contain_text("filesystem is now allowed for code_agent.")
    expect(allowed_list).to_contain_text("filesystem")
    assert page.url.endswith(f"/governance/roles/{role.pk}/")  # swapped in place, no navigation

    page.reload()
    expect(page.locator("#allowed-servers table")).to_contain_text("filesystem")
    assert allowed(role) == ["filesystem", "github_api"]

    page.get_by_role("button", name="Remove filesystem from allowed servers").click()
    expect(page.locator("#messages")).to_contain_text(
        "filesystem removed from the allowed servers of code_agent."
    )
    page.reload()
    expect(page.locator("#allowed-servers table")).not_to_contain_text("filesystem")
    assert allowed(role) == ["github_api"]


def test_admin_is_told_a_server_cannot_be_both_allowed_and_forbidden(
    live_server, page, admin, role_with_servers
):
    login(page, live_server.url, admin.username)
    page.goto(f"{live_server.url}/governance/roles/{role_with_servers.pk}/")
    page.select_option("#id_forbidden_server", label="github_api (allowed)")
    page.get_by_role("button", name="Add to forbidden").click()
    expect(page.locator("#forbidden-servers [role=alert]")).to_contain_text(
        "a server cannot be both allowed and forbidden"
    )
    assert not RoleServerRule.objects.filter(role=role_with_servers, kind=RuleKind.FORBIDDEN).exists()


def test_viewer_sees_no_controls_and_a_direct_post_is_refused(
    live_server, page, viewer, role_with_servers, team
):
    role = role_with_servers
    filesystem = team.servers.get(slug="filesystem")
    login(page, live_server.url, viewer.username)
    page.goto(f"{live_server.url}/governance/roles/{role.pk}/")
    expect(page.locator("#allowed-servers table")).to_contain_text("github_api")
    expect(page.get_by_role("button", name=re.compile("Add to|Remove"))).to_have_count(0)
    expect(page.locator("select[name=server]")).to_have_count(0)
    expect(page.get_by_role("link", name=re.compile("^(Edit|Delete)$"))).to_have_count(0)

    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post(
        f"{live_server.url}/governance/roles/{role.pk}/servers/add/",
        form={"server": str(filesystem.pk), "kind": "allowed"},
        headers={"X-CSRFToken": token},
    )
    assert response.status == 403
    assert allowed(role) == ["github_api"]


SEED_EXCERPT = """\
mcp_access:
  default: deny
  roles:
    database_agent:
      allowed_servers: [database_read_only]
      forbidden_servers: [shell_execution]
"""


def test_admin_imports_a_yaml_policy_after_a_preview(live_server, page, admin, transactional_db, team):
    login(page, live_server.url, admin.username)
    page.get_by_role("link", name="Policy YAML").click()
    page.fill("textarea[name=text]", SEED_EXCERPT)
    page.get_by_role("button", name="Preview (dry run)").click()
    preview = page.locator("#import-preview")
    expect(preview).to_contain_text("Dry run of an import of mcp_access into team acme: nothing was saved.")
    expect(preview).to_contain_text("database_agent")
    assert not AgentRole.objects.filter(team=team, name="database_agent").exists()

    page.get_by_role("button", name="Apply this import").click()
    expect(page.locator("#messages")).to_contain_text("Policy imported (mcp_access): ")
    expect(page.locator("h1")).to_have_text("Change history")
    role = AgentRole.objects.get(team=team, name="database_agent")
    assert role.server_slugs(RuleKind.ALLOWED) == ["database_read_only"]
    assert role.server_slugs(RuleKind.FORBIDDEN) == ["shell_execution"]
