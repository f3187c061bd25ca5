"""The audit batch route in front of Django (`asgi_events_route`) answers like the Django path.

Each case sends the same request twice — once through the route, once straight to Django's ASGI
handler (middleware, URL conf, DRF, `GatewayEventsView`) — under production-like settings, and
compares status, body and every header Django's middleware adds to this endpoint. A stored
batch is answered by the route itself (no `X-Frame-Options`, which only Django's clickjacking
middleware adds); every other answer is handed to Django. Both apps are built inside the settings
override, as a server process would build them.
"""

from __future__ import annotations

import json
import uuid

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings
from django.urls import resolve

from audit.api.events_route import VIEW_NAME, asgi_events_route
from audit.api.gateway import MAX_EVENTS_BODY_BYTES
from audit.hashing import stored_event_canonical
from audit.models import AgentSession, AuditEvent
from audit.services.digests import audit_verify
from governance.services.clients import client_revoke
from portal import metrics
from tests.asgi import asgi_request
from tests.audit.conftest import event, events, issue_client, open_session

pytestmark = pytest.mark.django_db(transaction=True)  # the route works in a thread of its own

NOT_MIRRORED = {b"x-frame-options", b"vary"}  # see portal.asgi_routes.DjangoMirror
PRODUCTION = {
    "DEBUG": False,
    "ALLOWED_HOSTS": ["portal.example", "127.0.0.1", "testserver"],  # testserver: open_session
    "SECURE_HSTS_SECONDS": 31536000,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    "SECURE_CONTENT_TYPE_NOSNIFF": True,
    "SECURE_SSL_REDIRECT": False,
}


def _url(sid: str) -> str:
    return f"/api/v1/gateway/sessions/{sid}/events/"


def _headers(token: str | None, body: bytes, **extra: bytes) -> tuple:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    headers += [(k.replace("_", "-").encode(), v) for k, v in extra.items()]
    return tuple(headers)


def _batch(items) -> bytes:
    return json.dumps({"events": items}).encode()


def _send(app, sid, body, token, *, scheme="https", host="127.0.0.1", query=b"", **headers):
    return asgi_request(
        app,
        "POST",
        _url(sid),
        body=body,
        scheme=scheme,
        host=host,
        query=query,
        headers=_headers(token, body, **headers),
    )


def _both(fast_sid, slow_sid, body, token, **request):
    """(route answer, Django answer, whether the route answered itself)."""
    django_app = ASGIHandler()
    route = asgi_events_route(django_app)
    fast = _send(route, fast_sid, body, token, **request)
    slow = _send(django_app, slow_sid, body, token, **request)
    in_front = b"x-frame-options" not in fast[1] and b"x-frame-options" in slow[1]
    return fast, slow, in_front


def _assert_alike(fast, slow):
    assert fast[0] == slow[0], (fast, slow)
    assert fast[2] == slow[2]
    strip = {b"content-length", *NOT_MIRRORED}
    assert {k: v for k, v in fast[1].items() if k not in strip} == {
        k: v for k, v in slow[1].items() if k not in strip
    }


@pytest.fixture
def gw(gateway, issued):
    gateway.token = issued.token
    return gateway


def _chain_recomputes(sid) -> bool:
    import hashlib

    prev = AgentSession.objects.get(pk=sid).events.order_by("seq").first().prev_hash
    for row in AuditEvent.objects.filter(session_id=sid).order_by("seq"):
        if row.prev_hash != prev:
            return False
        prev = hashlib.sha256((prev + stored_event_canonical(row)).encode()).hexdigest()
        if prev != row.hash:
            return False
    return True


@override_settings(**PRODUCTION)
def test_a_stored_batch_is_answered_in_front_exactly_as_django_answers_it(gw, team):
    fast_sid, slow_sid = open_session(gw), open_session(gw)
    before = metrics.REQUESTS.labels(VIEW_NAME, "POST", "200")._value.get()
    for first, last in ((1, 40), (41, 80)):
        fast, slow, in_front = _both(fast_sid, slow_sid, _batch(events(first, last)), gw.token)
        assert in_front and fast[0] == 200
        assert json.loads(fast[2]) == {"accepted": 40, "duplicates": 0, "last_seq": last}
        _assert_alike(fast, slow)
        assert fast[1][b"strict-transport-security"].startswith(b"max-age=31536000")
        assert fast[1][b"allow"] == b"POST, OPTIONS"
    # A retry overlapping the stored tail: the duplicates are dropped by (session, seq) on both paths.
    fast, slow, in_front = _both(fast_sid, slow_sid, _batch(events(71, 90)), gw.token)
    assert in_front and json.loads(fast[2]) == {"accepted": 10, "duplicates": 10, "last_seq": 90}
    _assert_alike(fast, slow)
    assert metrics.REQUESTS.labels(VIEW_NAME, "POST", "200")._value.get() >= before + 3
    # Stored alike: same counters and chain head shape, and the route's chain recomputes.
    fast_session, slow_session = (AgentSession.objects.get(pk=s) for s in (fast_sid, slow_sid))
    for field in ("last_seq", "event_count", "calls_total", "calls_failed", "servers_used"):
        assert getattr(fast_session, field) == getattr(slow_session, field)
    assert AuditEvent.objects.filter(session_id=fast_sid).count() == 90
    assert _chain_recomputes(fast_sid) and _chain_recomputes(slow_sid)
    assert audit_verify(team=team)[2] == []


def _deep(depth: int) -> dict:
    value: object = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def _with(index: int, **fields) -> bytes:
    batch = events(1, 4)
    batch[index].update(fields)
    return _batch(batch)


REFUSED = {
    "bad JSON": (b"{not json", 400),
    "NaN": (b'{"events": [{"seq": NaN}]}', 400),
    "not an object": (b"[1, 2]", 400),
    "no events": (b'{"batch": []}', 400),
    "events not a list": (b'{"events": {"seq": 1}}', 400),
    "deep nesting in arguments": (_with(1, arguments=_deep(120)), 400),
    "deep nesting elsewhere": (json.dumps({"events": [], "x": _deep(120)}).encode(), 400),
    "NUL in a summary": (_with(2, args_summary="nul\x00byte"), 400),
    "NUL in arguments": (_with(0, arguments={"k": "a\x00b"}), 400),
    "lone surrogate": (_with(0, args_summary="\\ud800").replace(b"\\\\ud800", b"\\ud800"), 400),
    "unknown field": (_with(3, colour="blue"), 400),
    "sequence gap": (_batch(events(2, 3)), 409),
    "gap inside the batch": (_batch([event(1), event(3)]), 409),
    "too many events": (_batch(events(1, 1001)), 413),
    "not UTF-8": (b'{"events": ["\xff"]}', 400),
}


@override_settings(**PRODUCTION)
@pytest.mark.parametrize("case", list(REFUSED))
def test_every_refusal_is_djangos_own_answer_and_stores_nothing(gw, case):
    body, status = REFUSED[case]
    sid = open_session(gw)
    fast, slow, in_front = _both(sid, sid, body, gw.token)
    assert not in_front and fast[0] == status, fast
    _assert_alike(fast, slow)
    assert not AuditEvent.objects.filter(session_id=sid).exists()


@override_settings(**PRODUCTION)
def test_a_changed_duplicate_is_a_conflict_on_both_paths(gw):
    sid = open_session(gw)
    _both(sid, open_session(gw), _batch(events(1, 4)), gw.token)
    altered = events(3, 6)
    altered[1]["result_summary"] = "something else"
    fast, slow, in_front = _both(sid, sid, _batch(altered), gw.token)
    assert not in_front and fast[0] == 409 and json.loads(fast[2])["code"] == "sequence_conflict"
    _assert_alike(fast, slow)
    assert AuditEvent.objects.filter(session_id=sid).count() == 4


@override_settings(**PRODUCTION)
@pytest.mark.parametrize(
    "token",
    [None, "not-a-token", "mcpgov_abcdef012345_nope", "mcpgov_x_y"],
    ids=["none", "bad", "unknown", "short"],
)
def test_tokens_that_do_not_authenticate_get_djangos_401(gw, token):
    sid = open_session(gw)
    fast, slow, in_front = _both(sid, sid, _batch(events(1, 2)), token)
    assert not in_front and fast[0] == 401
    _assert_alike(fast, slow)
    assert fast[1][b"www-authenticate"] == b"Bearer"
    assert not AuditEvent.objects.filter(session_id=sid).exists()


@override_settings(**PRODUCTION)
def test_a_client_of_another_team_cannot_write_into_this_teams_session(gw, other_gateway, other_team):
    theirs = issue_client(other_team, other_team.environments.get(name="development"), "gw-2")
    sid = open_session(gw)
    for target in (sid, str(uuid.uuid4())):
        fast, slow, in_front = _both(target, target, _batch(events(1, 2)), theirs.token)
        assert not in_front and fast[0] == 404 and json.loads(fast[2])["code"] == "not_found"
        _assert_alike(fast, slow)
    assert not AuditEvent.objects.filter(session_id=sid).exists()


@override_settings(**PRODUCTION)
def test_a_revoked_client_is_handed_to_the_views_delivery_rule_at_its_next_request(gw, issued):
    sid = open_session(gw)
    fast, _slow, in_front = _both(sid, open_session(gw), _batch(events(1, 2)), gw.token)
    assert in_front and fast[0] == 200
    client_revoke(client=issued.client)
    # Its session opened before the revocation: it may still deliver, but through the view (not in front).
    fast, slow, in_front = _both(sid, sid, _batch(events(3, 4)), gw.token)
    assert not in_front and fast[0] == 200 and json.loads(fast[2])["accepted"] == 2
    assert slow[0] == 200 and json.loads(slow[2]) == {"accepted": 0, "duplicates": 2, "last_seq": 4}
    # A session opened after the revocation (here: by another client of the team) is refused.
    other = issue_client(issued.client.team, issued.client.environment, "gw-other")
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {other.token}")
    later = open_session(api)
    fast, slow, in_front = _both(later, later, _batch(events(1, 2)), gw.token)
    assert not in_front and fast[0] == 401 and json.loads(fast[2])["code"] == "token_revoked"
    _assert_alike(fast, slow)


@override_settings(**PRODUCTION)
def test_a_declared_body_over_the_limit_is_refused_unread_by_django(gw):
    sid = open_session(gw)
    body = _batch(events(1, 2))
    django_app = ASGIHandler()
    over = ((b"content-length", str(MAX_EVENTS_BODY_BYTES + 1).encode()),)
    headers = (*_headers(gw.token, body)[:1], *over, (b"authorization", f"Bearer {gw.token}".encode()))
    fast = asgi_request(
        asgi_events_route(django_app), "POST", _url(sid), body=body, scheme="https", headers=headers
    )
    slow = asgi_request(django_app, "POST", _url(sid), body=body, scheme="https", headers=headers)
    assert fast[0] == slow[0] == 413 and fast[2] == slow[2]


@override_settings(**PRODUCTION)
def test_a_body_in_several_chunks_is_read_whole(gw):
    sid = open_session(gw)
    body = _batch(events(1, 6))
    route = asgi_events_route(ASGIHandler())
    answer = asgi_request(
        route,
        "POST",
        _url(sid),
        chunks=[body[:10], body[10:500], body[500:]],
        scheme="https",
        headers=_headers(gw.token, body),
    )
    assert answer[0] == 200 and json.loads(answer[2])["accepted"] == 6 and b"x-frame-options" not in answer[1]


@override_settings(**PRODUCTION)
def test_host_nul_query_and_https_redirect_are_djangos(gw):
    sid = open_session(gw)
    body = _batch(events(1, 2))
    fast, slow, _ = _both(sid, sid, body, gw.token, host="evil.example")
    assert fast[0] == slow[0] == 400 and fast[2] == slow[2]
    fast, slow, _ = _both(sid, sid, body, gw.token, query=b"x=%00")
    assert fast[0] == slow[0] == 400 and fast[2] == slow[2]
    with override_settings(SECURE_SSL_REDIRECT=True):
        fast, slow, _ = _both(sid, sid, body, gw.token, scheme="http")
        assert fast[0] == slow[0] == 301
        _assert_alike(fast, slow)
    assert not AuditEvent.objects.filter(session_id=sid).exists()


def test_the_metric_label_is_djangos_url_name():
    assert resolve(_url(str(uuid.uuid4()))).view_name == VIEW_NAME
