"""Enforcement clients: the bundle endpoint (auth, ETag/304, long poll, isolation), the clients UI
and the create_client command."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from governance.api import bundle as bundle_api
from governance.models import AgentRole, EnforcementClient, Environment, PolicyBundle
from governance.services import servers as server_services
from governance.services.bundles import bundle_publish
from governance.services.clients import client_authenticate, client_create, client_revoke
from mcpgov.verify import parse_jwks, verify_bundle
from portal.choices import TeamRole
from tests.asgi import asgi_get
from tests.conftest import redis_test_url
from tests.factories import make_member

URL = "/api/v1/bundle/"


@pytest.fixture(autouse=True)
def _fresh_caches():
    bundle_api._clear_caches()
    yield
    bundle_api._clear_caches()


def env(team, name="production"):
    return Environment.objects.select_related("team").get(team=team, name=name)


def issue(team, env_name="production", name=None, **kwargs) -> str:
    return client_create(
        team=team, environment=env(team, env_name), name=name or f"gw-{env_name}", **kwargs
    ).token


def auth(token):
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


# --- GET /api/v1/bundle/ ------------------------------------------------------------------------------


def test_bundle_is_served_signed_with_a_strong_etag(client, team):
    published = bundle_publish(environment=env(team)).bundle
    token = issue(team)
    response = client.get(URL, **auth(token))
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/jose"
    body = response.content.decode()
    assert body == published.jws
    assert response["ETag"] == f'"{hashlib.sha256(body.encode()).hexdigest()}"'
    assert response["X-Bundle-Version"] == str(published.version)
    # Verifiable with a stock JWS library against the public JWKS (fetched without authentication) …
    jwks = client.get("/api/v1/keys/?team=acme").json()
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == published.kid))
    decoded = jwt.api_jws.PyJWS().decode_complete(body, key=key.key, algorithms=["EdDSA"])
    payload = json.loads(decoded["payload"])
    assert payload["team"] == "acme" and payload["environment"] == "production"
    # … and with the gateway's verifier.
    assert (
        verify_bundle(body, parse_jwks(jwks), team="acme", environment="production").version
        == published.version
    )


def test_unchanged_etag_gets_304_and_a_new_bundle_gets_200(client, team):
    bundle_publish(environment=env(team))
    token = issue(team)
    first = client.get(URL, **auth(token))
    assert first.status_code == 200, first.content
    etag = first["ETag"]
    again = client.get(URL, HTTP_IF_NONE_MATCH=etag, **auth(token))
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    server_services.server_create(team=team, slug="time", command="python")
    new = bundle_publish(environment=env(team)).bundle
    bundle_api._clear_caches()  # the publish notification would drop it; the test client runs in-process too
    changed = client.get(URL, HTTP_IF_NONE_MATCH=etag, **auth(token))
    assert changed.status_code == 200 and changed["X-Bundle-Version"] == str(new.version)
    assert changed["ETag"] != etag


def test_publish_notification_drops_the_cached_bundle(client, team, django_capture_on_commit_callbacks):
    bundle_publish(environment=env(team))
    token = issue(team)
    etag = client.get(URL, **auth(token))["ETag"]
    assert client.get(URL, HTTP_IF_NONE_MATCH=etag, **auth(token)).status_code == 304  # now cached
    with django_capture_on_commit_callbacks(execute=True):
        # the write's on-commit rebuild publishes, and the publish notifies
        server_services.server_create(team=team, slug="time", command="python")
    assert client.get(URL, HTTP_IF_NONE_MATCH=etag, **auth(token)).status_code == 200


def test_nothing_published_is_404_no_bundle(client, team):
    PolicyBundle.objects.filter(team=team).delete()
    response = client.get(URL, **auth(issue(team, "staging")))
    assert response.status_code == 404 and response.json()["code"] == "no_bundle"


def test_the_portal_records_last_seen_address_and_running_version(client, team):
    bundle_publish(environment=env(team))
    token = issue(team)
    client.get(URL, HTTP_X_MCPGOV_BUNDLE_VERSION="7", REMOTE_ADDR="10.1.2.3", **auth(token))
    gw = EnforcementClient.objects.get(name="gw-production")
    assert gw.bundle_version == 7 and gw.last_seen_address == "10.1.2.3"
    assert timezone.now() - gw.last_seen_at < timedelta(seconds=5)


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "not_authenticated"),
        ("Bearer", "not_authenticated"),
        ("Token abc", "not_authenticated"),
        ("Bearer abc", "token_malformed"),
        ("Bearer mcpgov_abcdef012345_nope", "token_invalid"),
    ],
)
def test_other_tokens_get_401(client, team, header, code):
    bundle_publish(environment=env(team))
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get(URL, **extra)
    assert response.status_code == 401
    assert response.json()["code"] == code and response["WWW-Authenticate"].startswith("Bearer")
    assert b"eyJ" not in response.content


def test_revocation_takes_effect_within_the_cache_time(client, team):
    bundle_publish(environment=env(team))
    token = issue(team)
    assert client.get(URL, **auth(token)).status_code == 200
    client_revoke(client=client_authenticate(token))
    time.sleep(bundle_api.CLIENT_CACHE_SECONDS + 0.1)
    response = client.get(URL, **auth(token))
    assert response.status_code == 401 and response.json()["code"] == "token_revoked"


def test_expired_token_gets_401(client, team):
    bundle_publish(environment=env(team))
    token = issue(team)
    EnforcementClient.objects.filter(name="gw-production").update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    response = client.get(URL, **auth(token))
    assert response.status_code == 401 and response.json()["code"] == "token_expired"


def test_a_token_reaches_only_its_own_team_and_environment(client, team, other_team):
    for t in (team, other_team):
        for name in ("development", "production"):
            bundle_publish(environment=env(t, name))
    token = issue(team, "production")
    other_prod = PolicyBundle.objects.filter(team=other_team, environment__name="production").get()
    response = client.get(URL, HTTP_IF_NONE_MATCH=f'"{other_prod.etag}"', **auth(token))
    assert response.status_code == 200
    assert b"globex" not in response.content.split(b".")[1] and other_prod.jws.encode() != response.content
    verified = verify_bundle(
        response.content.decode(), parse_jwks(client.get("/api/v1/keys/?team=acme").json())
    )
    assert (verified.bundle.team, verified.bundle.environment) == ("acme", "production")
    # Other team's bundle, environment or policy objects: never through this token.
    PolicyBundle.objects.filter(team=team, environment__name="staging").delete()
    staging = client.get(URL, **auth(issue(team, "staging")))
    assert staging.status_code == 404 and b"globex" not in staging.content
    for path in ("/api/v1/servers/", "/api/v1/environments/", "/api/v1/roles/"):
        leaked = client.get(path, **auth(token))
        assert leaked.status_code in (401, 403, 404) and b"globex" not in leaked.content


def test_wait_must_be_between_0_and_30(client, team):
    bundle_publish(environment=env(team))
    token = issue(team)
    for bad in ("-1", "31", "soon"):
        response = client.get(f"{URL}?wait={bad}", **auth(token))
        assert response.status_code == 400 and response.json()["code"] == "invalid_wait"


# --- long poll against the real server (uvicorn subprocess) --------------------------------------------


def _get(base: str, path: str, headers: dict[str, str], timeout: float = 40):
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _server_pid(base: str) -> int:
    port = str(urlsplit(base).port)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"config.asgi:application" in argv and port.encode() in argv:
            return int(proc.name)
    raise AssertionError("uvicorn process not found")


def _long_poll_after_change(base: str, team) -> tuple[int, dict, float]:
    """Start a long poll, change the policy in this thread 0.5 s later; return status, headers and
    the seconds between the commit and the answer."""
    bundle_publish(environment=env(team))
    token = issue(team)
    headers = {"Authorization": f"Bearer {token}"}
    status, first, body = _get(base, URL, headers)
    assert status == 200, body
    result = {}

    def poll():
        result["answer"] = _get(base, f"{URL}?wait=20", {**headers, "If-None-Match": first["etag"]})
        result["at"] = time.monotonic()

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)
    # A policy write: on commit the rebuild runs (eager mode) and publishes a new version.
    server_services.server_create(team=team, slug="fresh_server", command="python")
    changed_at = time.monotonic()
    waiter.join(25)
    status, answer_headers, _ = result["answer"]
    return status, answer_headers, result["at"] - changed_at


@pytest.mark.slow
def test_long_poll_is_woken_by_a_change_without_redis(portal_server, team, settings):
    settings.REDIS_URL = ""
    status, headers, latency = _long_poll_after_change(portal_server, team)
    latest = PolicyBundle.objects.filter(environment=env(team)).order_by("-version").first()
    assert status == 200 and headers["x-bundle-version"] == str(latest.version)
    # Woken by the change: a poll that ran out its 20 s wait answers 304, not the new version.
    print(f"\nchange → long-poll answer: {latency:.2f} s")


@pytest.fixture
def redis_portal_server(request, transactional_db, monkeypatch, settings):
    monkeypatch.setenv("REDIS_URL", redis_test_url())
    # No fallback poll before the long poll's own 20 s timeout: only Redis can wake it earlier.
    monkeypatch.setenv("MCPGOV_REALTIME_SAFETY_POLL", "60")
    settings.REDIS_URL = redis_test_url()
    return request.getfixturevalue("portal_server")


@pytest.mark.slow
def test_long_poll_is_woken_through_redis(redis_portal_server, team):
    status, _headers, latency = _long_poll_after_change(redis_portal_server, team)
    # The server's fallback poll is 60 s and the poll waits 20 s: a 200 before then came through Redis.
    assert status == 200
    print(f"\nchange → long-poll answer through Redis: {latency:.2f} s")


@pytest.mark.slow
def test_long_poll_times_out_with_304_and_holds_no_thread_per_waiter(portal_server, team):
    bundle_publish(environment=env(team))
    token = issue(team)
    headers = {"Authorization": f"Bearer {token}"}
    _, first, _ = _get(portal_server, URL, headers)
    pid = _server_pid(portal_server)
    answers = []

    def poll():
        answers.append(_get(portal_server, f"{URL}?wait=3", {**headers, "If-None-Match": first["etag"]})[0])

    started = time.monotonic()
    waiters = [threading.Thread(target=poll) for _ in range(40)]
    for w in waiters:
        w.start()
    time.sleep(1.5)
    threads_while_waiting = len(list(Path(f"/proc/{pid}/task").iterdir()))
    for w in waiters:
        w.join(10)
    assert answers == [304] * 40
    assert time.monotonic() - started >= 2.9  # each one held its full wait (304 only after it)
    assert threads_while_waiting < 20, f"{threads_while_waiting} threads for 40 waiting long polls"


# --- the clients UI ------------------------------------------------------------------------------------


def test_clients_page_needs_manage_clients(client, team, viewer, reviewer, password):
    assert client.get("/governance/clients/").status_code == 302  # to the login page
    for user in (viewer, reviewer):
        client.force_login(user)
        assert client.get("/governance/clients/").status_code == 403
        assert (
            client.post("/governance/clients/add/", {"name": "x", "environment": env(team).pk}).status_code
            == 403
        )
    assert not EnforcementClient.objects.exists()


def test_admin_registers_a_client_and_sees_the_token_once(client, team, admin):
    bundle_publish(environment=env(team))
    client.force_login(admin)
    code_agent = AgentRole.objects.create(team=team, name="code_agent")
    AgentRole.objects.create(team=team, name="database_agent")
    form = {"name": "ci-runner", "environment": env(team).pk, "expires_days": "30", "roles": [code_agent.pk]}
    page = client.post("/governance/clients/add/", form)
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    token = page.context["token"]
    assert token.encode() in page.content
    gw = EnforcementClient.objects.get(name="ci-runner")
    assert token not in gw.token_hash and gw.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert timedelta(days=29) < gw.expires_at - timezone.now() <= timedelta(days=30)
    assert [r.name for r in gw.roles.all()] == ["code_agent"]  # only the role picked
    listing = client.get("/governance/clients/")
    assert b"ci-runner" in listing.content and token.encode() not in listing.content
    client.logout()
    assert client.get(URL, **auth(token)).status_code == 200


def test_list_shows_environment_last_seen_and_running_version(client, team, admin, other_team):
    bundle_publish(environment=env(team))
    token = issue(team, name="edge-1")
    issue(other_team, name="globex-gw")
    client.get(URL, HTTP_X_MCPGOV_BUNDLE_VERSION="1", REMOTE_ADDR="10.9.8.7", **auth(token))
    revoked = client_create(team=team, environment=env(team, "staging"), name="old-gw")
    client_revoke(client=revoked.client)
    client.force_login(admin)
    html = client.get("/governance/clients/").content.decode()
    assert "edge-1" in html and "10.9.8.7" in html and "v1" in html and "production" in html
    assert "old-gw" in html and "revoked" in html
    assert "globex-gw" not in html


def test_revoke_button_cuts_the_token_off(client, team, admin):
    bundle_publish(environment=env(team))
    token = issue(team)
    gw = EnforcementClient.objects.get(name="gw-production")
    client.force_login(admin)
    response = client.post(f"/governance/clients/{gw.pk}/revoke/")
    assert response.status_code == 302
    gw.refresh_from_db()
    assert gw.revoked_at is not None
    bundle_api._clear_caches()
    assert client.get(URL, **auth(token)).json()["code"] == "token_revoked"


def test_other_team_cannot_revoke(client, team, outsider):
    gw = client_create(team=team, environment=env(team), name="gw").client
    client.force_login(outsider)
    assert client.post(f"/governance/clients/{gw.pk}/revoke/").status_code == 404
    gw.refresh_from_db()
    assert gw.revoked_at is None


def test_viewer_cannot_revoke(client, team):
    gw = client_create(team=team, environment=env(team), name="gw").client
    client.force_login(make_member(team, TeamRole.VIEWER, username="v2"))
    assert client.post(f"/governance/clients/{gw.pk}/revoke/").status_code == 403
    gw.refresh_from_db()
    assert gw.revoked_at is None


# --- manage.py create_client ---------------------------------------------------------------------------


def test_create_client_command_prints_a_working_token(client, team):
    bundle_publish(environment=env(team, "staging"))
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_client", team="acme", env="staging", name="cli-gw", expires_days=7, stdout=out, stderr=err
    )
    token = out.getvalue().strip()
    assert token.startswith("mcpgov_") and "shown only once" in err.getvalue()
    gw = EnforcementClient.objects.get(name="cli-gw")
    assert gw.environment.name == "staging" and gw.expires_at is not None
    response = client.get(URL, **auth(token))
    assert response.status_code == 200
    assert (
        verify_bundle(
            response.content.decode(), parse_jwks(client.get("/api/v1/keys/?team=acme").json())
        ).bundle.environment
        == "staging"
    )


def test_create_client_command_refuses_bad_input(team):
    with pytest.raises(CommandError, match="no environment"):
        call_command("create_client", team="acme", env="qa", name="x", stdout=io.StringIO())
    with pytest.raises(CommandError, match="No team"):
        call_command("create_client", team="nope", env="staging", name="x", stdout=io.StringIO())
    call_command(
        "create_client", team="acme", env="staging", name="dup", stdout=io.StringIO(), stderr=io.StringIO()
    )
    with pytest.raises(CommandError):
        call_command(
            "create_client",
            team="acme",
            env="staging",
            name="dup",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    assert EnforcementClient.objects.filter(name="dup").count() == 1


def _asgi_get(host: str, token: str):
    from config.asgi import application

    return asgi_get(application, URL, host=host, headers=[(b"authorization", f"Bearer {token}".encode())])


def test_the_asgi_fast_path_answers_the_bundle_path_and_leaves_bad_hosts_to_django():
    status, headers, body = _asgi_get("127.0.0.1:8000", "not-a-token")
    assert status == 401
    assert b"x-frame-options" not in headers  # answered in front of Django's middleware
    assert json.loads(body)["code"] == "token_malformed"
    refused_status, _headers, _body = _asgi_get("evil.example", "not-a-token")
    assert refused_status == 400  # Django's DisallowedHost
