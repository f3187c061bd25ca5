"""A web process's warm-up (portal.warmup, run by config/asgi.py): the URL configuration is loaded and
the Redis publisher connected before the first request, and an unreachable Redis only logs."""

import socket

import pytest
from django.urls import get_resolver

from portal import realtime
from portal.warmup import warm
from tests.conftest import redis_test_url


@pytest.fixture
def fresh_publisher():
    realtime._hub._redis_pub = None
    yield
    realtime._hub._redis_pub = None


def test_warm_loads_the_urls_and_connects_the_publisher(settings, fresh_publisher):
    settings.REDIS_URL = redis_test_url()
    warm()
    assert "url_patterns" in get_resolver().__dict__  # the cached property is filled: views imported
    publisher = realtime._hub._redis_pub
    assert publisher is not None
    assert publisher.connection_pool._created_connections == 1  # connected, not just configured
    realtime.notify("warmup-test", 1)
    assert realtime._hub._redis_pub is publisher  # the first notification reuses that connection


def test_an_unreachable_redis_at_start_is_logged_and_retried_on_the_first_notify(
    settings, fresh_publisher, caplog
):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    warm()
    assert realtime._hub._redis_pub is None
    assert "Redis is not reachable yet" in caplog.text
    settings.REDIS_URL = redis_test_url()
    realtime.notify("warmup-test", 2)  # connects now
    assert realtime._hub._redis_pub is not None
