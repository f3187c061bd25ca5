"""A reviewer releasing a session whose kill-switch flag is still off is warned and asked to confirm (Chromium)."""

from __future__ import annotations

import uuid

import pytest

from audit.models import AgentSession
from audit.services import session_open, session_report_state
from governance.services.flags import flag_create, flag_disable
from governance.services.servers import server_create
from mcpgov import bundle as mcpgov_bundle
from mcpgov.decision import kill_switch_line
from tests.audit.conftest import issue_client
from tests.conftest import login

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_release_warns_while_the_flag_is_off_and_asks_for_confirmation(live_server, page, team, reviewer):
    env = team.environments.get(name="development")
    client = issue_client(team, env, "gw-browser").client
    flag = flag_create(
        team=team,
        server=server_create(team=team, slug="filesystem", category="filesystem"),
        capability="write",
    )
    flag_disable(flag=flag, environment=env, reason="suspected misuse", actor=reviewer)
    session, _ = session_open(client=client, id=uuid.uuid4(), role="code_agent")
    session_report_state(
        client=client,
        session_id=session.pk,
        state="halted",
        trigger="kill_switch_flag",
        reason=kill_switch_line(mcpgov_bundle.Flag(name=flag.name, enabled=False, reason="suspected misuse")),
    )

    login(page, live_server.url, reviewer.username)
    page.goto(f"{live_server.url}/audit/sessions/{session.pk}/")
    form = page.locator("form.release-form")
    form.locator("textarea[name=reason]").fill("The writes were intended.")
    form.locator("text=Allow to continue").click()
    dialog = page.locator("#release-confirm-dialog")
    dialog.wait_for(state="visible")
    assert f"Flag {flag.name} is still off in development" in dialog.inner_text()

    dialog.get_by_role("button", name="Cancel").click()
    dialog.wait_for(state="hidden")
    session.refresh_from_db()
    assert session.state == "halted"

    form.locator("text=Allow to continue").click()
    dialog.wait_for(state="visible")
    dialog.get_by_role("button", name="Release anyway").click()
    page.wait_for_selector(".messages")
    assert f"Session {session.short_id} may continue." in page.locator(".messages").inner_text()
    session = AgentSession.objects.get(pk=session.pk)
    assert session.state == "active" and session.decisions.get().reason == "The writes were intended."
