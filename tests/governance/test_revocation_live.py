"""Revoking an enforcement client answers its open long polls 401 and ends its Unleash streams at once.

Against the live portal (uvicorn in a subprocess): a real long poll is parked on the server, the
client is revoked in this process (the service an admin's click calls), and the answer must arrive
well before the poll's own timeout. Without Redis the other process learns of it from the
realtime fallback poll of the client's state; with Redis from the revocation event.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import requests
from django.utils import timezone

from audit.models import AgentSession
from governance.api import bundle as bundle_api
from governance.models import Environment
from governance.services.bundles import bundle_publish
from governance.services.clients import client_create, client_revoke
from tests.conftest import redis_test_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WAIT = 25  # the polls' own timeout: a 401 must come well before it


@pytest.fixture(autouse=True)
def _fresh_caches():
    bundle_api._clear_caches()
    yield
    bundle_api._clear_caches()


@pytest.fixture(params=["fallback-poll", "redis"])
def live_portal(request, transactional_db, monkeypatch, settings):
    if request.param == "redis":
        url = redis_test_url()
        monkeypatch.setenv("REDIS_URL", url)
        # No fallback poll before the polls' own timeout: only the revocation event can wake them.
        monkeypatch.setenv("MCPGOV_REALTIME_SAFETY_POLL", "60")
        settings.REDIS_URL = url
    else:
        monkeypatch.delenv("REDIS_URL", raising=False)
        settings.REDIS_URL = ""
    return request.getfixturevalue("portal_server")


def _client(team, env_name="staging"):
    environment = Environment.objects.select_related("team").get(team=team, name=env_name)
    return client_create(team=team, environment=environment, name=f"gw-{uuid.uuid4().hex[:6]}")


def _in_background(fn) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run():
        started = time.monotonic()
        try:
            response = fn()
            result["status"], result["body"] = response.status_code, response.content
        except Exception as exc:  # surfaced by the assertions below
            result["error"] = exc
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def _revoke_while_parked(issued, thread, result) -> None:
    time.sleep(1.5)  # the poll is parked on the server
    assert "status" not in result and "error" not in result, result
    client_revoke(client=issued.client)
    thread.join(WAIT + 10)
    assert "error" not in result, result
    assert result["status"] == 401, result
    assert json.loads(result["body"])["code"] == "token_revoked"
    # 401 is the revocation waking the poll (a poll that ran out its wait answers 304); no speed goal.
    print(f"\nrevocation → 401 after {result['seconds']:.2f} s")


def test_revoked_clients_bundle_long_poll_is_answered_401(live_portal, team):
    issued = _client(team)
    bundle_publish(environment=issued.client.environment)
    headers = {"Authorization": f"Bearer {issued.token}"}
    first = requests.get(f"{live_portal}/api/v1/bundle/", headers=headers, timeout=10)
    assert first.status_code == 200
    thread, result = _in_background(
        lambda: requests.get(
            f"{live_portal}/api/v1/bundle/?wait={WAIT}",
            headers={**headers, "If-None-Match": first.headers["ETag"]},
            timeout=WAIT + 10,
        )
    )
    _revoke_while_parked(issued, thread, result)


def test_revoked_clients_session_control_long_poll_is_answered_401(live_portal, team):
    issued = _client(team)
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
    thread, result = _in_background(
        lambda: requests.get(
            f"{live_portal}/api/v1/gateway/sessions/{session.pk}/control/?since=0&wait={WAIT}",
            headers={"Authorization": f"Bearer {issued.token}"},
            timeout=WAIT + 10,
        )
    )
    _revoke_while_parked(issued, thread, result)
    session.refresh_from_db()
    assert session.state == "halted"  # nothing else changed


def test_revoked_clients_unleash_stream_ends_and_reconnecting_gets_401(live_portal, team):
    issued = _client(team)
    url = f"{live_portal}/api/client/streaming"
    with requests.get(url, headers={"Authorization": issued.token}, stream=True, timeout=WAIT) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines(decode_unicode=True)
        assert next(lines) == "event: unleash-connected"
        while next(lines):  # the rest of the hydration event
            pass
        client_revoke(client=issued.client)
        revoked_at = time.monotonic()
        # The stream's own token re-check runs only every 15 s (keep-alive): the end comes before.
        rest = list(lines)  # until the server closes the stream
        ended_after = time.monotonic() - revoked_at
    assert "event: end" in rest, rest
    assert ended_after < 12, f"stream ended {ended_after:.1f}s after the revocation"
    again = requests.get(url, headers={"Authorization": issued.token}, timeout=10)
    assert again.status_code == 401 and again.json()["code"] == "token_revoked"


def test_a_revoked_clients_next_poll_is_refused_though_its_client_was_cached(live_portal, team):
    """The bundle route keeps a token's client for up to 30 s while its Redis subscription is up; the
    revocation event (or, without Redis, the one-second cache) must still refuse the next request."""
    issued = _client(team)
    bundle_publish(environment=issued.client.environment)
    headers = {"Authorization": f"Bearer {issued.token}"}
    for _ in range(3):  # authenticated, and cached by the portal process
        assert requests.get(f"{live_portal}/api/v1/bundle/", headers=headers, timeout=10).status_code == 200
    client_revoke(client=issued.client)
    deadline = time.monotonic() + 10  # generous on a loaded machine, and far below the 30 s cache
    statuses = []
    while time.monotonic() < deadline:
        statuses.append(
            requests.get(f"{live_portal}/api/v1/bundle/", headers=headers, timeout=10).status_code
        )
        if statuses[-1] == 401:
            break
        time.sleep(0.05)
    assert statuses[-1] == 401, statuses


def test_revoked_clients_bundle_stream_ends_with_the_polls_code_and_its_gateway_is_revoked(live_portal, team):
    """The streamed long poll: revocation ends the open stream at once with an `end` event carrying the
    poll's 401 code; a gateway following the stream (BundleManager) takes it as the poll's 401."""
    import anyio

    from governance.services.signing import jwks_document
    from mcpgov.bundle_manager import BundleManager
    from mcpgov.portal_client import PortalClient, PortalError
    from mcpgov.verify import parse_jwks

    issued, other = _client(team), _client(team)
    current = bundle_publish(environment=issued.client.environment).bundle
    headers = {
        "Authorization": f"Bearer {issued.token}",
        "Accept": "text/event-stream",
        "If-None-Match": f'"{current.etag}"',
        "X-Mcpgov-Flags-Revision": "0",
    }
    url = f"{live_portal}/api/v1/bundle/"
    with requests.get(url, headers=headers, stream=True, timeout=WAIT + 10) as resp:
        assert resp.status_code == 200 and resp.headers["Content-Type"] == "text/event-stream"
        time.sleep(1.5)  # the stream is parked on the server
        client_revoke(client=issued.client)
        lines = [line for line in resp.iter_lines(decode_unicode=True) if not line.startswith(":")]
    assert lines[-3:-1][0] == "event: end", lines
    end = json.loads(lines[-2].removeprefix("data: "))
    assert end == {"reason": "unauthorized", "status": 401, "code": "token_revoked", "detail": end["detail"]}
    again = requests.get(url, headers=headers, timeout=10)
    assert again.status_code == 401 and again.json()["code"] == "token_revoked"

    manager = BundleManager(
        parse_jwks(jwks_document(team=team)),
        environment=other.client.environment.name,
        team=team.slug,
        client=PortalClient(live_portal, other.token, timeout=10),
    )
    outcome: dict = {}

    async def follow():
        try:
            await manager.refresh()
            assert manager._streams()
            with anyio.fail_after(WAIT):
                await manager.follow()  # returns only when the stream ends
        except PortalError as exc:
            outcome["error"] = exc
        finally:
            await manager.client.aclose()

    thread = threading.Thread(target=anyio.run, args=(follow,))
    thread.start()
    time.sleep(1.5)
    client_revoke(client=other.client)
    thread.join(WAIT + 10)
    assert outcome["error"].status == 401 and outcome["error"].code == "token_revoked", outcome
    assert manager.client.revoked  # the gateway's kill switch: every call refused from now on
