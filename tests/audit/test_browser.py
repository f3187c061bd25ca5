"""A reviewer in a real browser: stopped by a missing explanation, explains, acknowledges, releases."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from audit.models import Acknowledgement, AgentSession, FailedCallExplanation
from audit.services import events_ingest
from tests.audit.conftest import event, issue_client
from tests.conftest import login

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _session(client, *, state: str, trigger: str | None = None, batch=()) -> AgentSession:
    session = AgentSession.objects.create(
        id=uuid.uuid4(),
        team=client.team,
        environment=client.environment,
        client=client,
        role="code_agent",
        started_at=timezone.now(),
        state=state,
        trigger=trigger,
        last_calls=[
            {
                "ts": f"2026-11-24T09:00:0{i}Z",
                "server": "filesystem",
                "tool": "write_file",
                "args": f"path=src/{i}.py",
                "outcome": "success",
            }
            for i in range(3)
        ],
    )
    if batch:
        events_ingest(session_id=session.pk, client=client, events=list(batch))
    return session


def test_reviewer_explains_acknowledges_and_releases(live_server, page, team, reviewer):
    client = issue_client(team, team.environments.get(name="development"), "gw-browser").client
    ended = _session(
        client,
        state="ended",
        batch=[
            event(1),
            event(2),
            event(3),
            event(4, status="fail", result_summary="403: branch is protected"),
        ],
    )
    halted = _session(client, state="halted", trigger="cascade_write_chain")

    login(page, live_server.url, reviewer.username)
    page.goto(f"{live_server.url}/audit/sessions/")
    page.click(f"a[href='/audit/sessions/{ended.pk}/']")
    failed_row = page.locator("tr.call-fail")
    assert failed_row.count() == 1 and "403: branch is protected" in failed_row.inner_text()

    # Acknowledging first is refused: the failed call has no explanation.
    page.fill("#review textarea[name=note]", "Checked every call.")
    page.click("text=Acknowledge session log")
    assert (
        "need an explanation before the session can be acknowledged" in page.locator(".messages").inner_text()
    )
    assert not Acknowledgement.objects.filter(session=ended).exists()

    page.fill("tr.call-fail textarea", "Tried to push to main; the branch is protected, as intended.")
    page.click("tr.call-fail >> text=Save explanation")
    assert "Explanation saved." in page.locator(".messages").inner_text()
    assert FailedCallExplanation.objects.get(session=ended, call_id="call-2").author == reviewer

    page.fill("#review textarea[name=note]", "Checked every call.")
    page.click("text=Acknowledge session log")
    assert "Session acknowledged." in page.locator(".messages").inner_text()
    assert "Acknowledged" in page.locator("#review").inner_text()
    assert page.locator("tr.call-fail textarea").count() == 0  # read-only now
    assert Acknowledgement.objects.get(session=ended).note == "Checked every call."

    # The halted session waits in the queue with its trigger and last three calls.
    page.click("nav >> text=Halted")
    item = page.locator(f"article[data-session='{halted.pk}']")
    assert "Cascade write chain" in item.inner_text() and item.locator(".last-calls tbody tr").count() == 3
    item.locator("textarea[name=reason]").first.fill("The three writes were one refactoring.")
    item.locator("text=Allow to continue").click()
    assert f"Session {halted.short_id} may continue." in page.locator(".messages").inner_text()
    assert page.locator(f"article[data-session='{halted.pk}']").count() == 0
    halted.refresh_from_db()
    assert halted.state == "active" and halted.control_version == 1
    assert halted.decisions.get().reason == "The three writes were one refactoring."
