"""The home per person: "needs you" counters linked to their queues, the nav's badges, the live poll
(204 while nothing changed), the inbox beside email, and the team's webhook with a real receiver."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from audit.models import AgentSession
from governance.choices import ToolReportStatus
from governance.models import ToolReport
from governance.services.webhooks import team_webhook_set, webhook_deliver
from portal.choices import TeamRole
from portal.models import ChangeRecord, Notification
from tests.audit.conftest import open_session
from tests.factories import ServerFactory, UserFactory, make_member
from tests.governance.access_helpers import file_request, policy


def needs_of(html: str) -> dict[str, str]:
    """{key: count} of the home's "Needs you" list."""
    import re

    return dict(re.findall(r'data-need="(\w+)">\s*<a href="[^"]*"><span class="num">(\d+)</span>', html))


def halt(gateway, sid, trigger="rate_limit"):
    r = gateway.patch(
        f"/api/v1/gateway/sessions/{sid}/",
        {"state": "halted", "trigger": trigger, "reason": "limit"},
        format="json",
    )
    assert r.status_code == 200, r.content


def test_each_person_sees_only_their_queues_with_counts_and_links(
    client, team, gateway, reviewer, requester, viewer
):
    halt(gateway, open_session(gateway))
    open_session(gateway)
    client.force_login(reviewer)
    html = client.get("/").content.decode()
    needs = needs_of(html)
    assert needs["halted"] == "1" and needs["paused"] == "0" and needs["approvals"] == "0"
    assert needs["tickets"] == "0" and "tools" not in needs  # a reviewer approves no tool definitions
    assert f'href="{reverse("audit:halted-queue")}"><span class="num">1' in html
    assert 'id="badge-audit_halted_queue">1<' in html  # the nav badge
    client.force_login(viewer)
    assert set(needs_of(client.get("/").content.decode())) == {"inbox"}
    client.force_login(requester)
    assert set(needs_of(client.get("/").content.decode())) == {"expiring", "inbox"}


def test_tickets_to_review_exclude_my_own_and_my_grants_ending_soon_count(
    client, team, admin, requester, reviewer
):
    p = policy(team)
    mine = file_request(team, admin, p)  # an admin's own ticket is not theirs to review
    theirs = file_request(team, requester, p)
    client.force_login(admin)
    assert needs_of(client.get("/").content.decode())["tickets"] == "1"
    client.force_login(reviewer)
    assert needs_of(client.get("/").content.decode())["tickets"] == "2"
    from governance.services.access import access_request_approve

    other = make_member(team, TeamRole.REVIEWER, username="acme-reviewer-2")
    access_request_approve(access_request=theirs, reviewer=other, reason="ok")
    theirs.refresh_from_db()
    type(theirs).objects.filter(pk=theirs.pk).update(ends_at=timezone.now() + timedelta(minutes=30))
    client.force_login(requester)
    assert needs_of(client.get("/").content.decode())["expiring"] == "1"
    assert mine.pk != theirs.pk


def test_pending_tool_reports_and_stale_gateways_reach_the_admin(client, team, admin, issued):
    server = ServerFactory(team=team, slug="time")
    ToolReport.objects.create(
        server=server,
        client=issued.client,
        client_name="gw-dev",
        source="discover",
        tools=[],
        content_hash="x" * 64,
        last_reported_at=timezone.now(),
        status=ToolReportStatus.PENDING,
    )
    type(issued.client).objects.filter(pk=issued.client.pk).update(
        last_seen_at=timezone.now() - timedelta(hours=3)
    )
    client.force_login(admin)
    html = client.get("/").content.decode()
    assert needs_of(html)["tools"] == "1" and needs_of(html)["stale"] == "1"
    assert f'href="{reverse("governance:server-detail", args=[server.pk])}"><span class="num">1' in html


def test_live_poll_answers_204_until_a_count_changes_then_the_new_badges(client, team, gateway, reviewer):
    sid = open_session(gateway)
    client.force_login(reviewer)
    html = client.get("/").content.decode()
    import re

    token = re.search(r'needs/\?seen=(\w+)"', html).group(1)
    assert client.get("/needs/", {"seen": token}).status_code == 204
    halt(gateway, sid)
    live = client.get("/needs/", {"seen": token}, HTTP_HX_REQUEST="true")
    body = live.content.decode()
    assert live.status_code == 200
    assert 'id="badge-audit_halted_queue" hx-swap-oob="true">1<' in body
    assert 'id="needs" aria-labelledby="needs-title" hx-swap-oob="true"' in body
    new = re.search(r'needs/\?seen=(\w+)"', body).group(1)
    assert new != token and client.get("/needs/", {"seen": new}).status_code == 204


def test_live_poll_and_inbox_refuse_strangers(client, team, other_team, outsider):
    assert client.get("/needs/").status_code == 302  # anonymous: to the login page
    client.force_login(UserFactory(username="loner"))
    assert client.get("/needs/").status_code == 404 and client.get("/inbox/").status_code == 404
    assert client.get("/").status_code == 200  # the home tells a team-less user so


def test_a_ticket_reaches_the_reviewers_inbox_beside_the_email(
    client, team, requester, reviewer, django_capture_on_commit_callbacks
):
    p = policy(team)
    with django_capture_on_commit_callbacks(execute=True):
        req = file_request(team, requester, p)
    assert [m.to for m in mail.outbox] == [[reviewer.email]]
    [notice] = Notification.objects.filter(user=reviewer)
    assert notice.url == reverse("governance:access-detail", args=[req.pk]) and notice.read_at is None
    assert not Notification.objects.filter(user=requester).exists()
    client.force_login(reviewer)
    assert needs_of(client.get("/").content.decode())["inbox"] == "1"
    page = client.get("/inbox/").content.decode()
    assert notice.text in page and 'class="notice unread"' in page
    # Opening it marks it read and goes to the ticket; another person cannot mark it.
    client.force_login(requester)
    client.post("/inbox/read/", {"pk": notice.pk})
    notice.refresh_from_db()
    assert notice.read_at is None
    client.force_login(reviewer)
    response = client.post("/inbox/read/", {"pk": notice.pk})
    assert response.status_code == 302 and response["Location"] == notice.url
    notice.refresh_from_db()
    assert notice.read_at is not None


# --- the team's webhook, against a real HTTP receiver ---------------------------------------------


class Receiver:
    """A local HTTP server recording the JSON posted to it; answers `statuses` in turn, then 200."""

    def __init__(self, statuses=()):
        self.bodies: list[dict] = []
        self.statuses = list(statuses)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = outer.statuses.pop(0) if outer.statuses else 200
                if status == 200:
                    outer.bodies.append({"json": json.loads(body), "type": self.headers.get("Content-Type")})
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/secret"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def loopback_allowed(settings):
    settings.MCPGOV_DISCOVERY_ALLOWED_NETWORKS = ["127.0.0.0/8"]


def test_a_halt_posts_slack_json_to_the_teams_webhook(
    team, admin, gateway, loopback_allowed, settings, django_capture_on_commit_callbacks
):
    settings.MCPGOV_PORTAL_URL = "https://portal.example.test"
    with Receiver() as receiver:
        team_webhook_set(team=team, actor=admin, webhook_url=receiver.url)
        team.refresh_from_db()
        sid = open_session(gateway)
        with django_capture_on_commit_callbacks(execute=True):
            halt(gateway, sid, trigger="kill_switch_flag")
        [delivered] = receiver.bodies  # eager Celery here; the retries through a real worker below
    assert delivered["type"] == "application/json"
    text = delivered["json"]["text"]
    assert set(delivered["json"]) == {"text"}
    assert text.startswith(
        f"[{team.name}] Session {sid[:8]} (code_agent in development) halted by kill_switch_flag"
    )
    assert f"<https://portal.example.test/audit/sessions/{sid}/|Open in the portal>" in text
    assert AgentSession.objects.get(pk=sid).state == "halted"
    # The history says the webhook changed, never its secret URL.
    record = ChangeRecord.objects.filter(team=team, summary="Team webhook set").get()
    assert "secret" not in json.dumps(record.changes) and "T000" not in json.dumps(record.changes)


def test_the_webhook_refuses_internal_addresses_and_a_4xx_is_not_retried(team, admin, settings):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match=r"does not connect to 127\.0\.0\.1"):
        team_webhook_set(team=team, actor=admin, webhook_url="http://127.0.0.1:9/hook")
    with pytest.raises(ValidationError, match="does not connect"):
        team_webhook_set(team=team, actor=admin, webhook_url="http://169.254.169.254/latest")
    team.refresh_from_db()
    assert team.webhook_url == ""
    settings.MCPGOV_DISCOVERY_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    with Receiver(statuses=[404]) as receiver:
        team_webhook_set(team=team, actor=admin, webhook_url=receiver.url)
        from governance.services.webhooks import WebhookRefused

        with pytest.raises(WebhookRefused, match="404"):
            webhook_deliver(team_id=team.pk, payload={"text": "x"})
        assert receiver.bodies == []


def test_only_a_team_admin_sets_the_webhook(client, team, admin, reviewer, outsider):
    # (outsider: an admin of other_team)
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        team_webhook_set(team=team, actor=reviewer, webhook_url="https://hooks.example.com/x")
    client.force_login(reviewer)
    assert client.get("/team/webhook/").status_code == 403
    assert client.post("/team/webhook/", {"webhook_url": "https://hooks.example.com/x"}).status_code == 403
    client.force_login(outsider)  # an admin of another team: only ever their own team's webhook
    client.post("/team/webhook/", {"webhook_url": "https://hooks.example.com/x"})
    team.refresh_from_db()
    assert team.webhook_url == ""
    client.force_login(admin)
    assert client.get("/team/webhook/").status_code == 200


@pytest.fixture
def worker(transactional_db, settings, tmp_path):
    """A real Celery worker on a queue of its own (safe beside other workers and tests)."""
    import uuid

    import redis

    from tests.conftest import celery_worker

    queue = f"webhook-test-{uuid.uuid4().hex[:12]}"
    log = tmp_path / "worker.log"
    settings.MCPGOV_WEBHOOK_QUEUE = queue
    with celery_worker(
        settings, log, queue=queue, env={"MCPGOV_DISCOVERY_ALLOWED_NETWORKS": "127.0.0.0/8"}
    ) as broker:
        try:
            yield log
        finally:
            redis.Redis.from_url(broker).delete(
                queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"
            )


@pytest.mark.slow
def test_a_real_worker_retries_the_webhook_until_the_receiver_takes_it(worker, team, admin, settings):
    """Two failures (503, then 500) and the third attempt lands: one message, retried with backoff."""
    import time

    from tests.audit.conftest import issue_client

    settings.MCPGOV_DISCOVERY_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    from rest_framework.test import APIClient

    issued = issue_client(team, team.environments.get(name="development"), "gw-webhook")
    gw = APIClient()
    gw.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.token}")
    with Receiver(statuses=[503, 500]) as receiver:
        team_webhook_set(team=team, actor=admin, webhook_url=receiver.url)
        sid = open_session(gw)
        halt(gw, sid)
        deadline = time.monotonic() + 120  # generous: the machine is loaded; the backoff is 1-2 s, then 2-4 s
        while not receiver.bodies and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(receiver.bodies) == 1, worker.read_text()[-3000:]
        assert receiver.statuses == []  # both failures were answered before the delivery
    log = worker.read_text()
    assert log.count("Retry in") == 2 and "deliver_team_webhook" in log, log[-3000:]
    assert receiver.bodies[0]["json"]["text"].startswith(f"[{team.name}] Session {sid[:8]}")


def test_a_halt_stays_counted_after_the_gateway_ends_the_session_until_reviewed(
    client, team, gateway, reviewer
):
    """As in the halted queue: a session that ended while halted still needs a person."""
    sid = open_session(gateway)
    halt(gateway, sid)
    assert (
        gateway.patch(f"/api/v1/gateway/sessions/{sid}/", {"state": "ended"}, format="json").status_code
        == 200
    )
    client.force_login(reviewer)
    needs = needs_of(client.get("/").content.decode())
    assert needs["halted"] == "1" and needs["acknowledge"] == "1"
    from audit.services.review import session_acknowledge

    session_acknowledge(session=AgentSession.objects.get(pk=sid), reviewer=reviewer, note="seen")
    needs = needs_of(client.get("/").content.decode())
    assert needs["halted"] == "0" and needs["acknowledge"] == "0"


def test_a_call_waiting_for_approval_posts_to_the_webhook_and_the_inbox_of_who_may_approve(
    team, admin, reviewer, viewer, gateway, loopback_allowed, settings, django_capture_on_commit_callbacks
):
    from tests.audit.conftest import event, post_events

    settings.MCPGOV_PORTAL_URL = "https://portal.example.test"
    with Receiver() as receiver:
        team_webhook_set(team=team, actor=admin, webhook_url=receiver.url)
        team.refresh_from_db()
        sid = open_session(gateway)
        held = event(1, trigger="approval_required", server="db", tool="drop_table")
        with django_capture_on_commit_callbacks(execute=True):
            assert post_events(gateway, sid, [held]).status_code in (200, 201)
        # The same batch again (a gateway's retry), then the rest of the session: no second notice.
        with django_capture_on_commit_callbacks(execute=True):
            post_events(gateway, sid, [held])
            post_events(gateway, sid, [event(2, call=7, phase="intent"), event(3, call=7, phase="result")])
        [delivered] = receiver.bodies
        # An agent's words cannot become a link or a mention in the channel.
        evil = event(
            4,
            call=8,
            phase="intent",
            trigger="approval_required",
            server="db",
            tool="<https://evil.test|Approve>",
        )
        with django_capture_on_commit_callbacks(execute=True):
            post_events(gateway, sid, [evil])
        assert len(receiver.bodies) == 2
    text = delivered["json"]["text"]
    assert set(delivered["json"]) == {"text"}
    assert text.startswith(
        f"[{team.name}] A call waiting for approval in session {sid[:8]} (code_agent in development): db.drop_table"
    )
    assert text.endswith("<https://portal.example.test/audit/halted/|Open in the portal>")
    assert "title=PR" not in text  # names only: the arguments stay in the portal
    second = receiver.bodies[1]["json"]["text"]
    assert "db.&lt;https://evil.test|Approve&gt;" in second
    assert second.count("<") == 1  # only the portal's own link
    # The inbox: who may approve (admin, reviewer), not a viewer; each links to the queue.
    notices = Notification.objects.filter(team=team, kind="call_approval")
    assert sorted(n.user.username for n in notices) == sorted([admin.username, reviewer.username] * 2)
    assert {n.url for n in notices} == {"/audit/halted/"}
    assert not notices.filter(user=viewer).exists()
