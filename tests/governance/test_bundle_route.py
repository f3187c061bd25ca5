"""The bundle route in front of Django (`asgi_bundle_route`) answers like the Django path.

Each case sends the same request twice — once through the route, once straight to Django's
ASGI handler (middleware, URL conf, `bundle_view`) — under the settings the route mirrors,
and compares status, body and every header the Django path's middleware adds to this
endpoint. Both apps are built inside the settings override, as a server process would be.
"""

from __future__ import annotations

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings

from governance.api import bundle as bundle_api
from governance.api.bundle import asgi_bundle_route
from governance.models import Environment
from governance.services.bundles import bundle_publish
from governance.services.clients import client_create
from tests.asgi import asgi_get

pytestmark = pytest.mark.django_db(transaction=True)  # the route reads in its own thread

URL = "/api/v1/bundle/"
# Added by middleware that does not apply to a bearer-token JOSE/JSON endpoint (the route's
# docstring says why); everything else must be equal.
NOT_MIRRORED = {b"x-frame-options", b"vary"}


def _call(app, **request):
    return asgi_get(app, URL, **request)


def _both(**request):
    """(route answer, Django answer, whether the route answered itself) for one request."""
    django_app = ASGIHandler()
    route = asgi_bundle_route(django_app)
    bundle_api._clear_caches()
    fast = _call(route, **request)
    bundle_api._clear_caches()
    slow = _call(django_app, **request)
    answered_in_front = b"x-frame-options" not in fast[1] and b"x-frame-options" in slow[1]
    return fast, slow, answered_in_front


def _assert_alike(fast, slow):
    assert fast[0] == slow[0]
    assert fast[2] == slow[2]
    strip = {b"content-type", b"content-length", *NOT_MIRRORED}
    fast_headers = {k: v for k, v in fast[1].items() if k not in strip}
    slow_headers = {k: v for k, v in slow[1].items() if k not in strip}
    assert fast_headers == slow_headers
    if fast[0] != 304:  # (Django labels an empty 304 text/html; there is no body to label)
        assert fast[1][b"content-type"].split(b";")[0] == slow[1][b"content-type"].split(b";")[0]


@pytest.fixture
def token(team):
    environment = Environment.objects.select_related("team").get(team=team, name="production")
    bundle_publish(environment=environment)
    return client_create(team=team, environment=environment, name="gw").token


def _auth(token):
    return ((b"authorization", f"Bearer {token}".encode()),)


PRODUCTION = {
    "DEBUG": False,
    "ALLOWED_HOSTS": ["portal.example", "127.0.0.1"],
    "SECURE_HSTS_SECONDS": 31536000,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    "SECURE_HSTS_PRELOAD": True,
    "SECURE_CONTENT_TYPE_NOSNIFF": True,
}


@override_settings(**PRODUCTION, SECURE_SSL_REDIRECT=False)
def test_the_bundle_and_its_security_headers_match_django(token):
    fast, slow, in_front = _both(scheme="https", headers=_auth(token))
    assert in_front and fast[0] == 200 and fast[2].startswith(b"eyJ")
    _assert_alike(fast, slow)
    assert fast[1][b"strict-transport-security"] == b"max-age=31536000; includeSubDomains; preload"
    assert fast[1][b"x-content-type-options"] == b"nosniff"
    assert b"default-src 'self'" in fast[1][b"content-security-policy"]

    etag = fast[1][b"etag"]
    fast, slow, in_front = _both(scheme="https", headers=(*_auth(token), (b"if-none-match", etag)))
    assert in_front and fast[0] == 304
    _assert_alike(fast, slow)


@override_settings(**PRODUCTION, SECURE_SSL_REDIRECT=False)
@pytest.mark.parametrize(
    ("headers", "query", "status"),
    [
        ((), b"", 401),
        (((b"authorization", b"Bearer not-a-token"),), b"", 401),
        (None, b"wait=99", 400),
    ],
)
def test_refusals_match_django(token, headers, query, status):
    fast, slow, in_front = _both(
        scheme="https", headers=_auth(token) if headers is None else headers, query=query
    )
    assert in_front and fast[0] == status
    _assert_alike(fast, slow)


@override_settings(**PRODUCTION, SECURE_SSL_REDIRECT=False)
def test_hsts_only_over_https_as_in_django(token):
    fast, slow, in_front = _both(scheme="http", headers=_auth(token))
    assert in_front and fast[0] == 200
    _assert_alike(fast, slow)
    assert b"strict-transport-security" not in fast[1]


@override_settings(**{**PRODUCTION, "SECURE_CONTENT_TYPE_NOSNIFF": False, "SECURE_HSTS_SECONDS": 0})
def test_turning_a_header_off_turns_it_off_on_both_paths(token):
    fast, slow, in_front = _both(scheme="https", headers=_auth(token))
    assert in_front and fast[0] == 200
    _assert_alike(fast, slow)
    assert b"x-content-type-options" not in fast[1] and b"strict-transport-security" not in fast[1]


@override_settings(
    **PRODUCTION, SECURE_SSL_REDIRECT=True, SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")
)
def test_https_redirect_and_the_proxy_header_as_in_django(token):
    fast, slow, _ = _both(scheme="http", headers=_auth(token))
    assert fast[0] == 301 and fast[1][b"location"] == b"https://127.0.0.1/api/v1/bundle/"
    _assert_alike(fast, slow)
    # Behind a proxy that says https, the request is served (in front of Django).
    fast, slow, in_front = _both(scheme="http", headers=(*_auth(token), (b"x-forwarded-proto", b"https")))
    assert in_front and fast[0] == 200
    _assert_alike(fast, slow)
    assert b"strict-transport-security" in fast[1]


@override_settings(**PRODUCTION, SECURE_SSL_REDIRECT=False)
def test_a_host_not_allowed_is_400_as_in_django(token):
    fast, slow, _ = _both(host="evil.example", scheme="https", headers=_auth(token))
    assert fast[0] == 400 and slow[0] == 400
    assert fast[2] == slow[2]


@override_settings(**PRODUCTION, SECURE_SSL_REDIRECT=False)
@pytest.mark.parametrize("query", [b"wait=1%00", b"x%00=1", b"other=%00"])
def test_a_nul_byte_in_the_query_is_400_as_in_django(token, query):
    fast, slow, _ = _both(scheme="https", headers=_auth(token), query=query)
    assert fast[0] == 400 and slow[0] == 400
    assert fast[2] == slow[2] and b"NUL" in fast[2]
