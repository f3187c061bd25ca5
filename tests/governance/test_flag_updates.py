"""The signed flags update, portal side: issued once per toggle in the toggle's transaction, signed with
the team's key under its own type, revisions increasing, and served on the bundle long poll only to
gateways that ask for it (and only while no newer bundle carries the flags)."""

from __future__ import annotations

import threading
import time

import pytest

from governance.api import bundle as bundle_api
from governance.models import Environment, FlagsUpdate, PolicyBundle
from governance.services.bundles import bundle_publish
from governance.services.clients import client_create
from governance.services.flags import flag_create, flag_disable, flag_enable
from governance.services.servers import server_create
from mcpgov.verify import BadSignature, MalformedBundle, parse_jwks, verify_bundle, verify_flags_update
from tests.conftest import rebuilds_queued_not_run, redis_test_url
from tests.governance.test_clients import _get

URL = "/api/v1/bundle/"


@pytest.fixture(autouse=True)
def _fresh_caches():
    bundle_api._clear_caches()
    yield
    bundle_api._clear_caches()


@pytest.fixture
def flag(team):
    return flag_create(team=team, server=server_create(team=team, slug="filesystem"), capability="write")


def env(team, name="production"):
    return Environment.objects.select_related("team").get(team=team, name=name)


def keys(client, team):
    return parse_jwks(client.get(f"/api/v1/keys/?team={team.slug}").json())


def test_a_toggle_signs_one_update_with_every_flag_and_increasing_revisions(
    client, team, flag, admin, django_capture_on_commit_callbacks
):
    prod = env(team)
    bundle = bundle_publish(environment=prod).bundle
    with django_capture_on_commit_callbacks(execute=False):  # no rebuild: the update alone
        flag_disable(flag=flag, environment=prod, reason="INC-4: stop writes", actor=admin)
    [first] = FlagsUpdate.objects.filter(environment=prod)
    verified = verify_flags_update(first.jws, keys(client, team), team="acme", environment="production")
    update = verified.update
    assert (
        (update.revision, update.bundle_version)
        == (1, bundle.version)
        == (first.revision, first.bundle_version)
    )
    assert update.expires_at == bundle.expires_at  # never outlives the bundle it applies to
    [flag_doc] = update.flags
    assert (flag_doc.name, flag_doc.enabled, flag_doc.reason) == (
        "mcp.filesystem.write",
        False,
        "INC-4: stop writes",
    )
    # the full flags state, exactly as the bundle would carry it
    compiled = bundle_publish(environment=prod).bundle
    assert [f.model_dump(mode="json") for f in update.flags] == compiled.content["flags"]
    assert first.kid == compiled.kid
    # its own type: never a bundle
    with pytest.raises(MalformedBundle):
        verify_bundle(first.jws, keys(client, team))
    # the next toggle: the next revision, bound to the latest bundle
    flag_enable(flag=flag, environment=prod, actor=admin)
    latest = FlagsUpdate.objects.filter(environment=prod).order_by("-revision").first()
    assert latest.revision == 2 and latest.bundle_version == compiled.version
    assert verify_flags_update(latest.jws, keys(client, team)).update.flags[0].enabled is True
    # another environment's revisions are its own
    assert not FlagsUpdate.objects.filter(environment=env(team, "staging")).exists()


def test_the_gateways_update_is_announced_before_the_flag_streams(
    team, flag, admin, django_capture_on_commit_callbacks, monkeypatch
):
    """A kill switch waits on the update's notification; the Unleash streams and the panel come after it."""
    from portal import realtime

    prod = env(team)
    bundle_publish(environment=prod)
    order = []
    monkeypatch.setattr(realtime._hub, "_listeners", {"": [lambda channel, token: order.append(channel)]})
    with django_capture_on_commit_callbacks(execute=True):
        flag_disable(flag=flag, environment=prod, reason="INC-6", actor=admin)
    assert order[:2] == [f"flags-update:{prod.pk}", f"flags:{prod.pk}"]


def test_no_bundle_yet_no_update_the_bundle_is_published_instead(
    team, flag, admin, django_capture_on_commit_callbacks
):
    prod = env(team)
    PolicyBundle.objects.filter(environment=prod).delete()
    with django_capture_on_commit_callbacks(execute=True):
        flag_disable(flag=flag, environment=prod, reason="INC-5", actor=admin)
    assert not FlagsUpdate.objects.filter(environment=prod).exists()
    latest = PolicyBundle.objects.filter(environment=prod).order_by("-version").first()
    assert [f["enabled"] for f in latest.content["flags"]] == [False]


def test_the_update_is_served_on_the_long_poll_to_gateways_that_ask(
    client, team, flag, admin, django_capture_on_commit_callbacks
):
    prod = env(team)
    bundle = bundle_publish(environment=prod).bundle
    token = client_create(team=team, environment=prod, name="gw").token
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_IF_NONE_MATCH": f'"{bundle.etag}"'}
    assert client.get(URL, HTTP_X_MCPGOV_FLAGS_REVISION="0", **auth).status_code == 304  # nothing yet
    with django_capture_on_commit_callbacks(execute=True):
        flag_disable(flag=flag, environment=prod, reason="INC-6", actor=admin)
    # the rebuild ran on commit (eager here): a gateway on the new bundle has the flags already
    rebuilt = PolicyBundle.objects.filter(environment=prod).order_by("-version").first()
    assert rebuilt.version == bundle.version + 1
    on_rebuilt = {**auth, "HTTP_IF_NONE_MATCH": f'"{rebuilt.etag}"'}
    assert client.get(URL, HTTP_X_MCPGOV_FLAGS_REVISION="0", **on_rebuilt).status_code == 304
    # a gateway still on the old bundle: the old ETag now gets the new bundle (as before)
    assert client.get(URL, HTTP_X_MCPGOV_FLAGS_REVISION="0", **auth).status_code == 200
    # the next toggle without the rebuild: gateways on the latest bundle get the update, not a bundle
    with django_capture_on_commit_callbacks(execute=False):
        flag_enable(flag=flag, environment=prod, actor=admin)
    bundle_api._clear_caches()
    response = client.get(URL, HTTP_X_MCPGOV_FLAGS_REVISION="1", **on_rebuilt)
    assert response.status_code == 200 and response["X-Mcpgov-Flags-Revision"] == "2"
    assert response["Content-Type"] == "application/jose" and "ETag" not in response
    update = verify_flags_update(
        response.content.decode(), keys(client, team), bundle_version=rebuilt.version
    )
    assert update.revision == 2 and update.update.flags[0].enabled is True
    # what the gateway has already: 304; a gateway that does not ask: 304 (whole bundles only)
    assert client.get(URL, HTTP_X_MCPGOV_FLAGS_REVISION="2", **on_rebuilt).status_code == 304
    assert client.get(URL, **on_rebuilt).status_code == 304
    for bad in ("x", "-1", "1.5", "99999999999"):
        refused = client.get(URL, HTTP_X_MCPGOV_FLAGS_REVISION=bad, **on_rebuilt)
        assert refused.status_code == 400 and refused.json()["code"] == "invalid_flags_revision"
    # a tampered stored update is served as it is and refused by the gateway's verification
    FlagsUpdate.objects.filter(environment=prod, revision=2).update(jws=update.jws[:-3] + "AAA")
    bundle_api._clear_caches()
    tampered = client.get(URL, HTTP_X_MCPGOV_FLAGS_REVISION="1", **on_rebuilt).content.decode()
    with pytest.raises(BadSignature):
        verify_flags_update(tampered, keys(client, team))


def test_other_teams_and_environments_never_get_the_update(client, team, other_team, flag, admin):
    prod = env(team)
    bundle_publish(environment=prod)
    for t, name in ((team, "staging"), (other_team, "production")):
        e = env(t, name)
        bundle = bundle_publish(environment=e).bundle
        token = client_create(team=t, environment=e, name=f"gw-{t.slug}-{name}").token
        flag_disable(flag=flag, environment=prod, reason="INC-7", actor=admin)
        response = client.get(
            URL,
            HTTP_AUTHORIZATION=f"Bearer {token}",
            HTTP_IF_NONE_MATCH=f'"{bundle.etag}"',
            HTTP_X_MCPGOV_FLAGS_REVISION="0",
        )
        assert response.status_code == 304
        flag_enable(flag=flag, environment=prod, actor=admin)


@pytest.mark.slow
def test_a_waiting_long_poll_is_answered_the_update_through_redis(redis_portal_server, team, settings):
    """Across processes (the portal under uvicorn, the toggle in this one), through Redis only; no
    rebuild runs, so the update alone wakes the poll."""
    with rebuilds_queued_not_run(settings):
        _answered_the_update(redis_portal_server, team)


def _answered_the_update(redis_portal_server, team):
    flag = flag_create(team=team, server=server_create(team=team, slug="filesystem"), capability="write")
    prod = env(team)
    bundle = bundle_publish(environment=prod).bundle
    token = client_create(team=team, environment=prod, name="gw").token
    headers = {
        "Authorization": f"Bearer {token}",
        "If-None-Match": f'"{bundle.etag}"',
        "X-Mcpgov-Flags-Revision": "0",
    }
    result = {}

    def poll():
        result["answer"] = _get(redis_portal_server, f"{URL}?wait=20", headers)

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(1.0)
    versions = PolicyBundle.objects.filter(environment=prod).count()
    flag_disable(flag=flag, environment=prod, reason="INC-8", actor=None)
    waiter.join(25)
    status, answer_headers, body = result["answer"]
    issued = FlagsUpdate.objects.filter(environment=prod).order_by("-revision").first()
    # the server's fallback poll is 60 s and the poll waits 20 s: a 200 now came through Redis
    assert status == 200 and answer_headers["x-mcpgov-flags-revision"] == str(issued.revision), body
    update = verify_flags_update(body.decode(), keys_of(team))
    assert update.update.flags[0].enabled is False
    assert PolicyBundle.objects.filter(environment=prod).count() == versions  # no bundle was built


def keys_of(team):
    from governance.services.signing import jwks_document

    return parse_jwks(jwks_document(team=team))


@pytest.fixture
def redis_portal_server(request, transactional_db, monkeypatch, settings):
    monkeypatch.setenv("REDIS_URL", redis_test_url())
    monkeypatch.setenv("MCPGOV_REALTIME_SAFETY_POLL", "60")
    settings.REDIS_URL = redis_test_url()
    return request.getfixturevalue("portal_server")


def test_pruning_keeps_the_latest_and_every_update_a_gateway_can_still_be_given(
    team, flag, admin, settings, django_capture_on_commit_callbacks
):
    from governance.services.flag_updates import flags_updates_prune
    from governance.tasks import prune_flags_updates

    prod, staging = env(team), env(team, "staging")
    bundle_publish(environment=prod)
    bundle_publish(environment=staging)

    def toggles(environment, n):
        for i in range(n):
            with django_capture_on_commit_callbacks(execute=False):  # no rebuild in between
                if i % 2 == 0:
                    flag_disable(flag=flag, environment=environment, reason=f"INC-{i}", actor=admin)
                else:
                    flag_enable(flag=flag, environment=environment, actor=admin)

    def revisions(environment):
        return sorted(FlagsUpdate.objects.filter(environment=environment).values_list("revision", flat=True))

    toggles(prod, 6)  # r1..r6, all naming the live bundle: each still applies
    toggles(staging, 2)
    assert flags_updates_prune(keep=2) == 0
    assert revisions(prod) == [1, 2, 3, 4, 5, 6]
    # a bundle built after them carries their flags: only the latest `keep` stay, then r7, r8 on it
    newer = bundle_publish(environment=prod).bundle
    toggles(prod, 2)
    assert FlagsUpdate.objects.get(environment=prod, revision=8).bundle_version == newer.version
    assert flags_updates_prune(keep=3) == 5
    assert revisions(prod) == [6, 7, 8]
    assert revisions(staging) == [1, 2]  # another environment's are its own
    # the next toggle continues the count, and the latest update is still served
    toggles(prod, 1)
    assert revisions(prod) == [6, 7, 8, 9]
    # the periodic task (beat): settings.MCPGOV_FLAGS_UPDATES_KEEP, never fewer than one; twice is harmless
    from config.celery import app

    assert app.conf.beat_schedule["governance-prune-flags-updates"]["task"] == prune_flags_updates.name
    settings.MCPGOV_FLAGS_UPDATES_KEEP = 0
    bundle_publish(environment=prod)
    assert prune_flags_updates() == 3 and prune_flags_updates() == 0
    assert revisions(prod) == [9]
    assert revisions(staging) == [1, 2]
