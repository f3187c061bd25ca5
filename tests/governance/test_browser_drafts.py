"""Real-browser journey (headless Chromium against the portal under uvicorn): an admin of a team that
edits through drafts makes two edits, reads the diff of the next bundles and the simulation over
recorded calls, and cannot publish the production-changing draft alone; a second admin approves it;
then it publishes as one new version per environment."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from governance.choices import DraftStatus, RuleKind
from governance.models import AgentRole, Environment, PolicyBundle, PolicyDraft, ServerBinding
from governance.services import environments as env_services
from governance.services import roles as role_services
from governance.services import servers as server_services
from governance.services.bundles import team_bundles_rebuild
from governance.services.teams import team_policy_settings_set
from portal.choices import TeamRole
from tests.audit.conftest import event, issue_client, open_session
from tests.conftest import login
from tests.factories import make_member
from tests.governance.test_drafts import versions

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def world(transactional_db, team, admin):
    from rest_framework.test import APIClient

    git = server_services.server_create(team=team, slug="git", command="python")
    server_services.server_tools_record(
        server=git,
        tools=[
            {"name": "log", "annotations": {"readOnlyHint": True}},
            {"name": "write_file", "annotations": {"readOnlyHint": False}},
        ],
    )
    github = server_services.server_create(
        team=team, slug="github_api", url="https://api.example.com/mcp", transport="http"
    )
    staging = Environment.objects.get(team=team, name="staging")
    issued = issue_client(team, staging, "gw-staging")  # also creates code_agent
    code_agent = AgentRole.objects.get(team=team, name="code_agent")
    role_services.role_server_add(role=code_agent, server=git, kind=RuleKind.ALLOWED)
    for env in Environment.objects.filter(team=team):
        env_services.binding_set(environment=env, server=git, target="/srv", permission="read_write")
        env_services.binding_set(environment=env, server=github, target="", permission="read_only")
    team_bundles_rebuild(team_id=team.pk)
    # A recorded staging session that wrote a file (through the gateways' ingestion API).
    gateway = APIClient()
    gateway.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.token}")
    sid = open_session(gateway, read_only=False)
    batch = []
    recent = timezone.now() - timedelta(minutes=30)  # inside the page's default window of 7 days
    for n, tool in enumerate(["log", "write_file"], 1):
        for seq in (2 * n - 1, 2 * n):
            ts = (recent + timedelta(seconds=seq)).isoformat()
            batch.append(event(seq, call=n, server="git", tool=tool, arguments={"path": "/srv/a"}, ts=ts))
    assert (
        gateway.post(f"/api/v1/gateway/sessions/{sid}/events/", {"events": batch}, format="json").status_code
        == 200
    )
    team_policy_settings_set(
        team=team, policy_edits_immediate=False, policy_drafts_require_second_approver=True
    )
    second = make_member(team, TeamRole.ADMIN, username="acme-admin2")
    return {"git": git, "github": github, "code_agent": code_agent, "sid": sid, "second": second}


def test_admin_drafts_two_edits_sees_diff_and_simulation_second_admin_approves_then_publish(
    portal_server, browser, page, world, team, admin
):
    base = portal_server
    before = versions(team)
    login(page, base, admin.username)

    # 1. git becomes read-only in staging (the binding page)
    binding = ServerBinding.objects.get(
        environment__team=team, environment__name="staging", server=world["git"]
    )
    page.goto(f"{base}/governance/bindings/{binding.pk}/edit/")
    page.select_option("#id_permission", "read_only")
    page.click("button:has-text('Save')")
    page.wait_for_url(f"{base}/governance/draft/")
    assert "Kept in the policy draft (change 1)" in page.inner_text("body")

    # 2. code_agent may use github_api (the role page's allowlist form, an htmx post)
    page.goto(f"{base}/governance/roles/{world['code_agent'].pk}/")
    page.select_option("#allowed-servers select[name=server]", label="github_api")
    page.click("#allowed-servers button:has-text('Add to allowed')")
    page.wait_for_url(f"{base}/governance/draft/")
    assert "Kept in the policy draft (change 2)" in page.inner_text("body")

    # Nothing live changed, nothing was published.
    assert ServerBinding.objects.get(pk=binding.pk).permission == "read_write"
    assert not world["code_agent"].rules.filter(server=world["github"]).exists()
    assert versions(team) == before

    # The diff of the next bundles, per environment, in people's words.
    assert page.locator("table.draft-changes tbody tr").count() == 2
    production = page.locator("section.draft-env[data-environment='production']").inner_text()
    assert "code_agent gains github_api in production" in production and "read_only" not in production
    staging = page.locator("section.draft-env[data-environment='staging']").inner_text()
    assert (
        "code_agent gains github_api in staging" in staging and "git becomes read_only in staging" in staging
    )
    assert "an admin who did not author it must approve it first" in page.inner_text("body")
    assert page.locator("button:has-text('Approve')").count() == 0  # not for the author

    # The simulation over the recorded staging session: the write would have been refused.
    page.click("text=Simulate on recorded calls")
    page.wait_for_url(re.compile(r"/audit/simulation/"))
    section = page.locator("section.simulation-env[data-environment='staging']")
    assert "1 newly refused (write_in_read_session: 1)" in section.inner_text()
    refused = section.locator("tr.newly-refused")
    assert refused.count() == 1
    assert (
        "git.write_file" in refused.inner_text() and "refuse (write_in_read_session)" in refused.inner_text()
    )
    assert refused.locator("a").get_attribute("href") == f"/audit/sessions/{world['sid']}/"

    # The author alone cannot publish a production change.
    page.click("text=Back to the draft")
    page.get_by_role("button", name="Publish", exact=True).click()
    page.wait_for_url(f"{base}/governance/draft/")
    assert "another admin must approve it before it is published" in page.inner_text("body")
    assert versions(team) == before

    # A second admin approves.
    other = browser.new_context().new_page()
    other.set_default_timeout(10_000)
    try:
        login(other, base, world["second"].username)
        other.goto(f"{base}/governance/draft/")
        other.click("button:has-text('Approve')")
        other.wait_for_selector("text=Draft approved.")
        assert "Approved by acme-admin2" in other.inner_text("body")
    finally:
        other.context.close()

    page.reload()
    assert "Approved by acme-admin2" in page.inner_text("body")
    page.get_by_role("button", name="Publish", exact=True).click()
    page.wait_for_selector("text=Draft published.")
    assert "No open draft." in page.inner_text("body")
    draft = PolicyDraft.objects.get(team=team)
    assert draft.status == DraftStatus.PUBLISHED and draft.approved_by == world["second"]
    assert versions(team) == {name: n + 1 for name, n in before.items()}
    assert ServerBinding.objects.get(pk=binding.pk).permission == "read_only"
    latest = PolicyBundle.objects.filter(environment__team=team, environment__name="staging").order_by(
        "-version"
    )
    assert latest.first().content["environment_policy"]["bindings"]["git"]["permission"] == "read_only"
    production = PolicyBundle.objects.filter(environment__team=team, environment__name="production")
    assert (
        "github_api"
        in production.order_by("-version").first().content["roles"]["code_agent"]["allowed_servers"]
    )
