"""The Content-Security-Policy in a real browser: the main pages load with no violation, htmx included."""

from __future__ import annotations

import pytest

from governance.services.servers import server_create
from portal.choices import TeamRole
from tests.conftest import login
from tests.factories import make_member

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PAGES = [
    "/",
    "/governance/servers/",
    "/governance/roles/",
    "/governance/environments/",
    "/governance/limits/",
    "/governance/policy/import/",
    "/governance/history/",
    "/governance/bundles/",
    "/governance/clients/",
    "/governance/access/",
    "/governance/access/new/",
    "/governance/flags/",
    "/incidents/",
    "/audit/sessions/",
    "/audit/halted/",
    "/audit/activity/",
    "/governance/effective/",
    "/team/members/",
    "/site/teams/",
    "/api/v1/docs/",
    "/admin/",
]

# Records every violation the page reports (Playwright's init script itself is exempt from the CSP).
RECORD = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " " + (e.sourceFile || ""));
});
"""


def test_main_pages_load_without_a_csp_violation(live_server, page, transactional_db, team):
    user = make_member(team, TeamRole.ADMIN, username="csp-admin")
    user.is_superuser = user.is_staff = True
    user.save()
    server_create(team=team, slug="github_api", transport="http", url="https://api.github.com/mcp")
    console = []
    page.on("console", lambda msg: console.append(msg.text))
    page.add_init_script(RECORD)
    login(page, live_server.url, user.username)
    seen = {}
    for path in PAGES:
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        assert "default-src 'self'" in response.headers["content-security-policy"], path
        page.wait_for_load_state("networkidle")
        seen[path] = page.evaluate("window.__csp")
    assert {path: v for path, v in seen.items() if v} == {}
    assert [m for m in console if "Content Security Policy" in m] == []
    # the scripts did run: htmx is loaded, and the team switcher submits on change (portal.js)
    page.goto(f"{live_server.url}/")
    assert page.evaluate("typeof htmx") == "object"
    assert page.evaluate("htmx.config.includeIndicatorStyles") is False
