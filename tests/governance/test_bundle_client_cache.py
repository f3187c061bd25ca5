"""The bundle route's token → client cache never keeps a read that a revocation overtook.

A long poll's client read may start before an admin's revocation commits and finish after the
revocation's event dropped the cache: that read's "active" answer must not be cached (it would be
trusted for up to 30 s while the Redis subscription is up), so the client's next request is refused.
"""

from __future__ import annotations

import asyncio

import pytest

from governance.api import bundle as bundle_api
from governance.models import Environment
from governance.services.clients import CLIENT_CHANNEL_PREFIX, TokenError, client_create, client_revoke

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_caches():
    bundle_api._clear_caches()
    yield
    bundle_api._clear_caches()


def test_a_read_overtaken_by_a_revocation_is_not_cached(team, monkeypatch):
    environment = Environment.objects.get(team=team, name="staging")
    issued = client_create(team=team, environment=environment, name="gw-race")
    monkeypatch.setattr(bundle_api, "_client_max_age", lambda: 30.0)  # as while Redis delivers
    real = bundle_api._authenticate_or_error

    def read_then_revoked(token):
        result = real(token)  # read while the client is still active …
        client_revoke(client=issued.client)  # … then the revocation commits and its event arrives
        bundle_api.drop_cached_client(f"{CLIENT_CHANNEL_PREFIX}{issued.client.pk}", None)
        return result

    monkeypatch.setattr(bundle_api, "_authenticate_or_error", read_then_revoked)
    first = asyncio.run(bundle_api._authenticate(issued.token))
    assert first.pk == issued.client.pk  # that request asked for nothing newer than its read
    monkeypatch.setattr(bundle_api, "_authenticate_or_error", real)
    with pytest.raises(TokenError):
        asyncio.run(bundle_api._authenticate(issued.token))


def test_a_read_after_the_last_drop_is_cached(team, monkeypatch):
    environment = Environment.objects.get(team=team, name="staging")
    issued = client_create(team=team, environment=environment, name="gw-cached")
    monkeypatch.setattr(bundle_api, "_client_max_age", lambda: 30.0)
    calls = []
    real = bundle_api._authenticate_or_error
    monkeypatch.setattr(
        bundle_api, "_authenticate_or_error", lambda token: calls.append(token) or real(token)
    )
    asyncio.run(bundle_api._authenticate(issued.token))
    asyncio.run(bundle_api._authenticate(issued.token))
    assert len(calls) == 1  # the second request was answered from the cache
