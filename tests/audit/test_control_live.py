"""A reviewer's release reaches a gateway's control long poll within a second (portal under uvicorn)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from audit.models import AgentSession
from audit.services import session_release
from tests.audit.conftest import issue_client
from tests.conftest import redis_test_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _halted_session(team):
    import uuid

    from django.utils import timezone

    issued = issue_client(team, team.environments.get(name="development"), "gw-live")
    session = AgentSession.objects.create(
        id=uuid.uuid4(),
        team=team,
        environment=issued.client.environment,
        client=issued.client,
        role="code_agent",
        started_at=timezone.now(),
        state="halted",
        trigger="cascade_write_chain",
    )
    return issued.token, session


def _long_poll_sees_release(base_url, team, reviewer):
    token, session = _halted_session(team)
    url = f"{base_url}/api/v1/gateway/sessions/{session.pk}/control/?since=0&wait=20"
    result = {}

    def poll():
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our own test server
            result["status"], result["body"] = response.status, response.read()
        result["at"] = time.monotonic()

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(1.5)  # the poll is parked on the server
    assert "status" not in result
    session_release(session=session, reviewer=reviewer, reason="the write chain was intended")
    released_at = time.monotonic()  # the decision is committed (and published) now
    thread.join(timeout=25)
    assert result["status"] == 200, result["body"]
    body = json.loads(result["body"])
    assert (
        body["state"] == "active" and body["control_version"] == 1 and body["decided_by"] == reviewer.username
    )
    latency = result["at"] - released_at
    # control_version 1 is the release waking the poll (a timed-out poll answers version 0); the
    # speed is bench/killswitch_propagation.py's.
    print(f"\nrelease → control poll answer: {latency:.2f} s")
    return latency


def test_release_wakes_the_long_poll(portal_server, team, reviewer):
    _long_poll_sees_release(portal_server, team, reviewer)


@pytest.fixture
def redis_url():
    url = redis_test_url()
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {url}")
    return url


@pytest.fixture
def portal_with_redis(redis_url, monkeypatch, settings, request):
    monkeypatch.setenv("REDIS_URL", redis_url)
    # No fallback poll before the long poll's own 20 s timeout: only Redis can wake it earlier.
    monkeypatch.setenv("MCPGOV_REALTIME_SAFETY_POLL", "60")
    settings.REDIS_URL = redis_url  # this process publishes the decision
    return request.getfixturevalue("portal_server")


def test_release_reaches_the_long_poll_through_redis(portal_with_redis, team, reviewer):
    _long_poll_sees_release(portal_with_redis, team, reviewer)
