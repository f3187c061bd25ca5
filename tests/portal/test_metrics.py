"""The portal's /metrics: who may read it, and what it reports (parsed with prometheus-client's parser)."""

from __future__ import annotations

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from audit.models import AgentSession
from governance.services.bundles import team_bundles_rebuild
from tests.audit.conftest import environment, event, gateway, issued, open_session, post_events  # noqa: F401 - fixtures
from tests.conftest import redis_test_url

pytestmark = pytest.mark.django_db


def samples(response) -> dict[tuple[str, tuple], float]:
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }


def value(found, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.parametrize(
    ("meta", "status"),
    [
        ({"REMOTE_ADDR": "127.0.0.1"}, 200),
        ({"REMOTE_ADDR": "::1"}, 200),
        ({"REMOTE_ADDR": "10.1.2.3"}, 404),
        # a reverse proxy on this host relays someone else's request: not loopback
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}, 404),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_FORWARDED": "for=203.0.113.9"}, 404),
        ({"REMOTE_ADDR": "10.1.2.3", "HTTP_AUTHORIZATION": "Bearer s3cret-metrics-token"}, 200),
        ({"REMOTE_ADDR": "10.1.2.3", "HTTP_AUTHORIZATION": "Bearer wrong"}, 403),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_AUTHORIZATION": "Basic czNjcmV0"}, 403),
    ],
)
def test_metrics_answer_loopback_or_the_bearer_token(client, settings, meta, status):
    settings.MCPGOV_METRICS_TOKEN = "s3cret-metrics-token"
    response = client.get("/metrics", **meta)
    assert response.status_code == status
    if status == 200:
        assert b"mcpgov_portal_sessions" in response.content
    else:
        assert b"mcpgov_portal" not in response.content


def test_without_a_token_setting_no_bearer_token_opens_it(client, settings):
    settings.MCPGOV_METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer ").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 404


def test_requests_bundle_builds_ingestion_and_sessions_are_counted(client, gateway, team):  # noqa: F811 - fixture
    before = samples(client.get("/metrics"))
    sid = open_session(gateway)
    assert post_events(gateway, sid, [event(1), event(2)]).status_code == 200
    assert post_events(gateway, sid, [event(1), event(2)]).status_code == 200  # duplicates: not counted again
    team_bundles_rebuild(team_id=team.pk, reason="metrics test")
    AgentSession.objects.filter(pk=sid).update(state="halted")
    after = samples(client.get("/metrics"))

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("mcpgov_portal_audit_events_ingested_total") == 2
    assert moved("mcpgov_portal_audit_ingest_lag_seconds_count") == 2
    # the test events are dated 2026-11-24 09:00: their lag is days, in the top bucket only
    assert moved("mcpgov_portal_audit_ingest_lag_seconds_bucket", le="3600.0") == 0
    assert moved("mcpgov_portal_audit_ingest_lag_seconds_bucket", le="+Inf") == 2
    events_view = {"view": "audit-api:gateway-events", "method": "POST", "status": "200"}
    assert moved("mcpgov_portal_http_requests_total", **events_view) == 2
    assert moved("mcpgov_portal_http_requests_total", view="metrics", method="GET", status="200") == 1
    built = moved("mcpgov_portal_bundle_builds_total", outcome="published") + moved(
        "mcpgov_portal_bundle_builds_total", outcome="unchanged"
    )
    assert built >= 1
    assert (
        moved("mcpgov_portal_bundle_build_duration_seconds_count", outcome="published")
        + moved("mcpgov_portal_bundle_build_duration_seconds_count", outcome="unchanged")
        == built
    )
    assert value(after, "mcpgov_portal_sessions", state="halted") == 1


def test_celery_queue_length_is_read_from_a_redis_broker(client, settings):
    url = redis_test_url()
    settings.CELERY_BROKER_URL = url
    r = redis.Redis.from_url(url)
    r.delete("celery")
    try:
        r.rpush("celery", "task-1", "task-2", "task-3")
        assert (
            value(samples(client.get("/metrics")), "mcpgov_portal_celery_queue_length", queue="celery") == 3
        )
    finally:
        r.delete("celery")
    settings.CELERY_BROKER_URL = ""
    assert ("mcpgov_portal_celery_queue_length", (("queue", "celery"),)) not in samples(
        client.get("/metrics")
    )
