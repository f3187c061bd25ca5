"""The streamed bundle long poll (`Accept: text/event-stream`), against the portal under uvicorn with
real `mcpgov` gateways (`PortalClient` + `BundleManager`): flags updates arrive as events on one open
response, a changed bundle ends the stream and is fetched, its lifetime ends it and the gateway
reconnects, a client that goes away leaves no waiter behind, and a bad update on the stream is refused.
The plain long poll is answered as before. Revocation: tests/governance/test_revocation_live.py."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from datetime import timedelta

import anyio
import pytest
import requests
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from governance.api import bundle as bundle_api
from governance.models import EnforcementClient, FlagsUpdate, PolicyBundle
from governance.services.bundles import bundle_publish
from governance.services.flag_updates import flags_update_channel
from governance.services.flags import flag_disable, flag_enable
from governance.services.signing import jwks_document
from mcpgov.bundle import Trigger
from mcpgov.bundle_manager import BundleManager
from mcpgov.decision import ToolCall, Verdict, compile_policy, decide
from mcpgov.portal_client import PortalClient
from mcpgov.session import SessionState
from mcpgov.verify import parse_jwks
from portal import realtime
from tests.conftest import rebuilds_queued_not_run, redis_test_url, run_portal
from tests.e2e.portal_world import ROLE, build_world

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

URL = "/api/v1/bundle/"
WAIT = 30  # generous: a loaded machine


@pytest.fixture(autouse=True)
def _fresh_caches():
    bundle_api._clear_caches()
    yield
    bundle_api._clear_caches()


def _portal(monkeypatch, settings, tmp_path, **env):
    """The portal under uvicorn with Redis fan-out and no fallback poll before the waits end (so a
    notification, not the safety net, is what wakes a stream), metrics on, and `env` settings."""
    url = redis_test_url()
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("MCPGOV_REALTIME_SAFETY_POLL", "60")
    settings.REDIS_URL = url
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    return run_portal(env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), **env})


@pytest.fixture
def live(transactional_db, monkeypatch, settings, tmp_path):
    with _portal(monkeypatch, settings, tmp_path) as base:
        yield base


@pytest.fixture
def short_lived(transactional_db, monkeypatch, settings, tmp_path):
    with _portal(monkeypatch, settings, tmp_path, MCPGOV_BUNDLE_STREAM_MAX_SECONDS="2") as base:
        yield base


@pytest.fixture
def quick_heartbeat(transactional_db, monkeypatch, settings, tmp_path):
    with _portal(monkeypatch, settings, tmp_path, MCPGOV_BUNDLE_STREAM_HEARTBEAT_SECONDS="1") as base:
        yield base


@pytest.fixture
def world(transactional_db):
    return build_world("acme")


def waiters(base: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=15) as resp:  # noqa: S310 - a local test URL
        text = resp.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "mcpgov_portal_longpoll_waiters" and s.labels.get("channel") == "bundle"
    )


def eventually(predicate, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


class Gateway:
    """One real gateway's bundle side (PortalClient + BundleManager.run) in a thread of its own, and the
    decision it takes for its next call; `opened` counts its stream requests."""

    def __init__(self, base: str, token: str, team) -> None:
        self.client = PortalClient(base, token, timeout=10)
        self.manager = BundleManager(
            parse_jwks(jwks_document(team=team)),
            environment="development",
            team=team.slug,
            client=self.client,
        )
        self.opened = 0
        open_stream = self.client.bundle_stream

        def counting(**kwargs):
            self.opened += 1
            return open_stream(**kwargs)

        self.client.bundle_stream = counting
        self._stop = threading.Event()
        self._thread = threading.Thread(target=anyio.run, args=(self._main,), daemon=True)
        self.error: BaseException | None = None

    async def _main(self) -> None:
        try:
            await self.manager.refresh()
            await self.manager.refresh()  # a newer flags update, as a gateway does at start
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.manager.run)
                while not self._stop.is_set():
                    await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
            raise
        finally:
            with contextlib.suppress(Exception):
                await self.client.aclose()

    def verdict(self) -> str | None:
        if self.manager.enforced is None:
            return None
        policy = compile_policy(self.manager.enforced.bundle, ROLE)
        call = ToolCall("time", "get_current_time", {"timezone": "UTC"})
        decision = decide(policy, SessionState(session_id="t", role=ROLE), call, time.time())
        return decision.trigger or decision.verdict

    def __enter__(self) -> Gateway:
        self._thread.start()
        eventually(lambda: self.opened >= 1 or self.error is not None, "the gateway opens its stream")
        assert self.error is None, self.error
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        assert not self._thread.is_alive()


def test_updates_arrive_on_one_open_stream_and_the_gateway_refuses_the_next_call(live, world, settings):
    dev = world.env("development")
    (token,) = world.issue("development")
    with Gateway(live, token, world.team) as gw, rebuilds_queued_not_run(settings):
        assert gw.verdict() == Verdict.ALLOW
        eventually(lambda: waiters(live) >= 1, "the stream waits on the portal")
        versions = PolicyBundle.objects.filter(environment=dev).count()
        for k, (toggle, expected) in enumerate(
            [(flag_disable, Trigger.KILL_SWITCH_FLAG), (flag_enable, Verdict.ALLOW)] * 2
        ):
            extra = {"reason": f"INC-{k}"} if toggle is flag_disable else {}
            toggle(flag=world.flag, environment=dev, actor=world.admin, **extra)
            eventually(lambda expected=expected: gw.verdict() == expected, f"toggle {k} reaches the gateway")
        assert gw.manager.flags_seen == FlagsUpdate.objects.filter(environment=dev).latest().revision
        assert PolicyBundle.objects.filter(environment=dev).count() == versions  # updates only, no bundle
        assert gw.opened == 1  # four updates, one stream
        assert gw.manager.rejected == 0


def test_a_new_bundle_ends_the_stream_and_is_installed_then_streaming_resumes(live, world, settings):
    dev = world.env("development")
    (token,) = world.issue("development")
    with Gateway(live, token, world.team) as gw, rebuilds_queued_not_run(settings):
        flag_disable(flag=world.flag, environment=dev, reason="INC-8", actor=world.admin)
        eventually(lambda: gw.verdict() == Trigger.KILL_SWITCH_FLAG, "the update on the first stream")
        before = gw.manager.current.version
        published = bundle_publish(environment=dev, reason="the rebuild carrying the flag").bundle
        assert published.version > before
        eventually(lambda: gw.manager.current.version == published.version, "the new bundle is installed")
        assert gw.manager.flags is None  # the bundle's own flags supersede the update
        assert gw.verdict() == Trigger.KILL_SWITCH_FLAG
        eventually(lambda: gw.opened >= 2, "the gateway opens a stream on the new bundle")
        flag_enable(flag=world.flag, environment=dev, actor=world.admin)
        eventually(lambda: gw.verdict() == Verdict.ALLOW, "the next update reaches the new stream")
        assert gw.manager.rejected == 0


def test_a_stream_ends_at_its_lifetime_and_the_gateway_reconnects(short_lived, world, settings):
    (token,) = world.issue("development")
    current = PolicyBundle.objects.filter(environment=world.env("development")).latest("version")
    headers = _stream_headers(token, current.etag, revision=0)
    with requests.get(f"{short_lived}{URL}", headers=headers, stream=True, timeout=WAIT) as resp:
        assert resp.status_code == 200 and resp.headers["Content-Type"] == "text/event-stream"
        lines = list(resp.iter_lines(decode_unicode=True))  # until the portal ends the stream
    assert lines[-3:] == ["event: end", 'data: {"reason":"max_lifetime"}', ""], lines
    with Gateway(short_lived, token, world.team) as gw, rebuilds_queued_not_run(settings):
        eventually(lambda: gw.opened >= 3, "the gateway reconnects after each lifetime")
        flag_disable(flag=world.flag, environment=world.env("development"), reason="INC-3", actor=world.admin)
        eventually(lambda: gw.verdict() == Trigger.KILL_SWITCH_FLAG, "an update after reconnecting")
        assert gw.error is None and not gw.client.revoked


def test_a_client_that_goes_away_leaves_no_waiter(live, world):
    tokens = world.issue("development", 3)
    current = PolicyBundle.objects.filter(environment=world.env("development")).latest("version")
    assert waiters(live) == 0
    streams = [
        requests.get(
            f"{live}{URL}", headers=_stream_headers(t, current.etag, revision=0), stream=True, timeout=WAIT
        )
        for t in tokens
    ]
    eventually(lambda: waiters(live) == 3, "three streams wait")
    for resp in streams:
        assert resp.headers["Content-Type"] == "text/event-stream"
        resp.close()  # the gateway goes away mid-stream
    eventually(lambda: waiters(live) == 0, "every stream's subscription is left")


def _stream_headers(token: str, etag: str, *, revision: int) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Accept": "text/event-stream",
        "If-None-Match": f'"{etag}"',
        "X-Mcpgov-Flags-Revision": str(revision),
        "X-Mcpgov-Bundle-Version": "1",
    }


def _events(resp, count: int) -> list[dict[str, str]]:
    """The next `count` events of a stream (heartbeats skipped)."""
    out, fields = [], {}
    for line in resp.iter_lines(decode_unicode=True):
        if line.startswith(":"):
            continue
        if not line:
            if fields:
                out.append(fields)
                fields = {}
                if len(out) == count:
                    return out
            continue
        name, _, value = line.partition(": ")
        fields[name] = value
    return out


def test_tampered_replayed_and_other_teams_updates_on_the_stream_are_refused(live, world, settings):
    """A compromised database (or portal) serves the update: the gateway's verification refuses each,
    on the open stream, and enforces the last good flags; a good update after them still applies."""
    dev = world.env("development")
    other = build_world("other")
    (token,) = world.issue("development")
    with Gateway(live, token, world.team) as gw, rebuilds_queued_not_run(settings):
        for toggle, expected in ((flag_disable, Trigger.KILL_SWITCH_FLAG), (flag_enable, Verdict.ALLOW)) * 2:
            extra = {"reason": "INC-1"} if toggle is flag_disable else {}
            toggle(flag=world.flag, environment=dev, actor=world.admin, **extra)
            eventually(lambda expected=expected: gw.verdict() == expected, "a genuine update")
        flag_disable(flag=world.flag, environment=dev, reason="INC-1", actor=world.admin)
        eventually(lambda: gw.verdict() == Trigger.KILL_SWITCH_FLAG, "the switch is off")
        good = FlagsUpdate.objects.filter(environment=dev).latest()
        switched_on = FlagsUpdate.objects.get(environment=dev, revision=good.revision - 1)
        flag_disable(flag=other.flag, environment=other.env("development"), reason="x", actor=other.admin)
        theirs = FlagsUpdate.objects.filter(environment=other.env("development")).latest()
        head, payload, signature = good.jws.split(".")
        forged = [
            f"{head}.{payload}.{signature[:-4]}AAAA",  # tampered signature
            switched_on.jws,  # a replay of the previous genuine update (switch on), as a newer revision
            theirs.jws,  # another team's genuine update
        ]
        for k, jws in enumerate(forged):
            revision = good.revision + 1 + k
            FlagsUpdate.objects.create(
                team=world.team,
                environment=dev,
                revision=revision,
                bundle_version=good.bundle_version,
                jws=jws,
                kid=good.kid,
                issued_at=timezone.now(),
                expires_at=timezone.now() + timedelta(hours=1),
            )
            realtime.notify(flags_update_channel(dev.pk), revision)
            eventually(lambda revision=revision: gw.manager.flags_seen == revision, f"forged update {k} seen")
            assert gw.verdict() == Trigger.KILL_SWITCH_FLAG
        assert gw.manager.rejected == 3
        assert gw.manager.flags.revision == good.revision
        flag_enable(flag=world.flag, environment=dev, actor=world.admin)
        eventually(lambda: gw.verdict() == Verdict.ALLOW, "a genuine update after the forged ones")
        assert gw.opened == 1


def test_the_plain_long_poll_and_errors_before_a_stream_are_answered_as_before(live, world, settings):
    dev = world.env("development")
    (token,) = world.issue("development")
    current = PolicyBundle.objects.filter(environment=dev).latest("version")
    poll = {
        "Authorization": f"Bearer {token}",
        "If-None-Match": f'"{current.etag}"',
        "X-Mcpgov-Flags-Revision": "0",
    }
    with rebuilds_queued_not_run(settings):
        flag_disable(flag=world.flag, environment=dev, reason="INC-2", actor=world.admin)
    update = FlagsUpdate.objects.filter(environment=dev).latest()
    plain = requests.get(f"{live}{URL}?wait=5", headers=poll, timeout=WAIT)
    assert plain.status_code == 200 and plain.content == update.jws.encode()
    assert plain.headers["Content-Type"] == "application/jose"
    assert plain.headers["X-Mcpgov-Flags-Revision"] == str(update.revision)
    assert plain.headers["Content-Length"] == str(len(update.jws))
    streamed_headers = _stream_headers(token, current.etag, revision=0)
    with requests.get(f"{live}{URL}?wait=5", headers=streamed_headers, stream=True, timeout=WAIT) as resp:
        assert resp.status_code == 200 and resp.headers["Content-Type"] == "text/event-stream"
        assert resp.headers["ETag"] == f'"{current.etag}"'
        # the same security headers as the poll's answer (portal.asgi_routes.DjangoMirror)
        for name in ("X-Content-Type-Options", "Referrer-Policy", "Cross-Origin-Opener-Policy"):
            assert resp.headers.get(name) == plain.headers.get(name), name
        (event,) = _events(resp, 1)
    assert event == {"event": "flags", "id": str(update.revision), "data": update.jws}
    # the poll's last-seen bookkeeping: the version the gateway reported, when and from where
    seen = EnforcementClient.objects.filter(environment=dev).order_by("-pk").first()
    assert (
        seen.bundle_version == 1 and seen.last_seen_at is not None and seen.last_seen_address == "127.0.0.1"
    )
    # without the flags header, Accept is not enough: the plain poll (whole bundles only)
    no_flags = {k: v for k, v in streamed_headers.items() if k != "X-Mcpgov-Flags-Revision"}
    assert requests.get(f"{live}{URL}?wait=0", headers=no_flags, timeout=WAIT).status_code == 304
    # an old bundle: the new one, plainly, not a stream
    stale = {**streamed_headers, "If-None-Match": '"0000"'}
    answer = requests.get(f"{live}{URL}", headers=stale, timeout=WAIT)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/jose"
    # errors before the stream starts are the poll's plain HTTP errors
    for headers, status, code in (
        ({**streamed_headers, "Authorization": "Bearer mcpgov_nope"}, 401, None),
        ({**streamed_headers, "X-Mcpgov-Flags-Revision": "x"}, 400, "invalid_flags_revision"),
    ):
        refused = requests.get(f"{live}{URL}", headers=headers, timeout=WAIT)
        assert refused.status_code == status, refused.text
        assert refused.headers["Content-Type"] == "application/json"
        assert refused.json()["code"] == (
            code
            or requests.get(
                f"{live}{URL}", headers={"Authorization": headers["Authorization"]}, timeout=WAIT
            ).json()["code"]
        )  # as the poll's


def test_a_token_that_expires_mid_stream_ends_it_with_the_polls_code(quick_heartbeat, world):
    """Expiry has no event: the heartbeat's check of the (cached) client notices it."""
    from governance.services.clients import client_create

    dev = world.env("development")
    issued = client_create(
        team=world.team, environment=dev, name="gw-expiring", expires_at=timezone.now() + timedelta(seconds=4)
    )
    current = PolicyBundle.objects.filter(environment=dev).latest("version")
    headers = _stream_headers(issued.token, current.etag, revision=0)
    with requests.get(f"{quick_heartbeat}{URL}", headers=headers, stream=True, timeout=WAIT) as resp:
        assert resp.status_code == 200 and resp.headers["X-Mcpgov-Stream-Heartbeat"] == "1"
        (end,) = _events(resp, 1)
    assert end["event"] == "end"
    assert json.loads(end["data"])["code"] == "token_expired"


def test_under_wsgi_the_django_view_answers_a_stream_request_with_the_plain_long_poll(
    client, world, settings
):
    """A WSGI server would read an asynchronous stream to its end before sending any of it (Django's
    StreamingHttpResponse does): the update would arrive when the stream's lifetime is over. The test
    client is a WSGI request, as `manage.py runserver` and gunicorn make: it gets the poll's answer at once,
    which the gateway takes as such (tests/mcpgov/test_bundle_stream.py)."""
    settings.MCPGOV_BUNDLE_STREAM_MAX_SECONDS = 60.0
    dev = world.env("development")
    (token,) = world.issue("development")
    current = PolicyBundle.objects.filter(environment=dev).latest("version")
    with rebuilds_queued_not_run(settings):
        flag_disable(flag=world.flag, environment=dev, reason="INC-5", actor=world.admin)
    update = FlagsUpdate.objects.filter(environment=dev).latest()
    headers = {
        f"HTTP_{k.upper().replace('-', '_')}": v
        for k, v in _stream_headers(token, current.etag, revision=0).items()
    }
    response = client.get(URL, **headers)
    assert response.status_code == 200 and response["Content-Type"] == "application/jose"
    assert not response.streaming
    assert response["X-Mcpgov-Flags-Revision"] == str(update.revision)
    assert response.content.decode() == update.jws
