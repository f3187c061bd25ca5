"""Real-browser journeys (headless Chromium): a production-access ticket from filing to a live,
ticking countdown, and a kill switch thrown from the panel with a reason."""

from __future__ import annotations

import re

import pytest

from governance.choices import AccessRequestStatus
from governance.models import AccessRequest, FlagState
from governance.services.flags import flag_create
from tests.conftest import login
from tests.governance.access_helpers import policy

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def world(transactional_db, team, admin, reviewer, requester):
    p = policy(team)
    p["flag"] = flag_create(team=team, server=p["filesystem"], capability="write", actor=admin)
    return p


def test_requester_files_reviewer_approves_requester_sees_the_countdown_tick(
    live_server, browser, page, world, requester, reviewer
):
    base = live_server.url
    # The requester files a ticket.
    login(page, base, requester.username)
    page.click("nav >> text=Production access")
    page.click("text=Request access")
    # choosing the role reloads the server list (htmx): wait for that answer before ticking a server
    with page.expect_response(lambda r: "/governance/access/new/" in r.url and r.request.method == "GET"):
        page.select_option("#id_role", label="database_agent")
    page.check("#field-servers input[name=servers] >> nth=0")  # database (servers are listed by slug)
    page.fill("#id_reason", "INC-42: repair the orders table index")
    page.click("button:has-text('File the request')")
    page.wait_for_url(re.compile(r"/governance/access/\d+/$"))
    assert "Pending review" in page.inner_text("h1")
    assert "review deadline in" in page.inner_text("#countdown")
    req = AccessRequest.objects.get()
    assert req.requester == requester and [s.slug for s in req.servers.all()] == ["database"]
    # The requester cannot approve it: no decision form on their own ticket.
    assert page.locator("#decision-form").count() == 0

    # A reviewer approves it with a reason.
    reviewer_page = browser.new_context().new_page()
    reviewer_page.set_default_timeout(10_000)
    login(reviewer_page, base, reviewer.username)
    reviewer_page.goto(f"{base}/governance/access/")
    reviewer_page.click(f"#pending-requests >> text=#{req.pk}")
    reviewer_page.fill("#id_reason", "On call for INC-42")
    reviewer_page.click("button:has-text('Approve')")
    reviewer_page.wait_for_selector("text=approval recorded")
    req.refresh_from_db()
    assert req.status == AccessRequestStatus.APPROVED

    # The requester sees it live, the countdown ticking down every second.
    page.reload()
    assert "Approved" in page.inner_text("h1")
    countdown = page.locator("#countdown .countdown")
    first = countdown.inner_text()
    assert re.search(r"\d+h \d\dm \d\ds left|\d\dm \d\ds left", first), first
    page.wait_for_function(
        "previous => document.querySelector('#countdown .countdown').textContent !== previous",
        arg=first,
        timeout=3000,
    )
    second = countdown.inner_text()
    assert second != first and second.endswith("left")
    # And in the list of their tickets.
    page.goto(f"{base}/governance/access/")
    row = page.locator(f"#my-requests tr[data-request='{req.pk}']")
    assert "Approved" in row.inner_text() and "left" in row.inner_text()
    reviewer_page.context.close()


def test_admin_disables_a_flag_from_the_kill_switch_panel_with_a_reason(
    live_server, page, world, team, admin
):
    base = live_server.url
    login(page, base, admin.username)
    page.click("nav >> text=Kill switch")
    cell = page.locator("#kill-switch-panel tr[data-flag='mcp.filesystem.write'] [data-env='production']")
    assert "ON" in cell.inner_text()
    cell.locator("button:has-text('Disable')").click()
    dialog = page.locator("#disable-dialog")
    assert dialog.is_visible()
    assert "mcp.filesystem.write in production" in dialog.inner_text()
    # The reason is required: the dialog does not submit without one.
    page.click("#disable-confirm")
    assert dialog.is_visible()
    assert FlagState.objects.get(flag=world["flag"], environment=world["production"]).enabled
    page.fill("#id_disable_reason", "Production incident: filesystem writes suspended")
    page.click("#disable-confirm")
    page.wait_for_selector("text=Gateways refuse its calls")
    cell = page.locator("#kill-switch-panel tr[data-flag='mcp.filesystem.write'] [data-env='production']")
    assert "OFF" in cell.inner_text() and "filesystem writes suspended" in cell.inner_text()
    assert admin.username in cell.inner_text()
    state = FlagState.objects.get(flag=world["flag"], environment=world["production"])
    assert not state.enabled and state.reason == "Production incident: filesystem writes suspended"
    assert state.changed_by == admin
    # Only production: staging is still on.
    assert FlagState.objects.get(flag=world["flag"], environment__name="staging").enabled
