"""Under concurrent load the portal keeps its PostgreSQL connections within its pool and answers no 500.

One uvicorn worker with a pool of POOL_SIZE connections, 20 concurrent clients (page views,
ingestion, bundle and control long polls, kill-switch toggles); `pg_stat_activity` is sampled
throughout. Long polls parked on the server must hold no connection, or they alone would exceed
the pool. (bench/db_connections.py is the same with 2 workers and 50 clients, and prints figures.)
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connection

from governance.models import Environment
from tests.e2e.portal_world import build_world
from tests.portal.db_load import PORTAL_APP_NAME, ConnectionSampler, LoadTarget, drive, prepare

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

POOL_SIZE = 4
CLIENTS = 20


@pytest.fixture
def pooled_portal(request, transactional_db, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("the connection pool is PostgreSQL's (DATABASE_URL=postgres://…)")
    monkeypatch.setenv("PGAPPNAME", PORTAL_APP_NAME)  # libpq: names the portal's connections
    monkeypatch.setenv("DATABASE_POOL_MAX_SIZE", str(POOL_SIZE))
    monkeypatch.setenv("DATABASE_POOL_TIMEOUT", "20")
    monkeypatch.delenv("REDIS_URL", raising=False)
    return request.getfixturevalue("portal_server")


def test_concurrent_load_stays_within_the_pool_without_500(pooled_portal):
    world = build_world("pooled")
    environment = Environment.objects.get(team=world.team, name="development")
    token, sessions, cookies = prepare(world.team, world.admin, world.flag, environment, sessions=CLIENTS)
    target = LoadTarget(pooled_portal, cookies, token, sessions, world.flag.pk, environment.pk)
    db = settings.DATABASES["default"]
    conninfo = (
        f"host={db.get('HOST') or '127.0.0.1'} port={db.get('PORT') or 5432} "
        f"user={db.get('USER') or 'postgres'} dbname={connection.settings_dict['NAME']}"
    )
    if db.get("PASSWORD"):
        conninfo += f" password={db['PASSWORD']}"
    sampler = ConnectionSampler(conninfo, connection.settings_dict["NAME"])
    sampler.start()
    result = drive(target, clients=CLIENTS, seconds=8, max_requests=200)
    peak = sampler.stop()

    assert result.server_errors == 0, (result.answers, result.errors[:5])
    assert not result.errors, result.errors[:5]
    for kind in ("page", "ingest", "bundle_poll", "control_poll", "toggle"):
        assert result.ok(kind) > 0, (kind, result.answers)
    assert sampler.samples > 10
    assert 0 < peak <= POOL_SIZE, f"peak {peak} connections for a pool of {POOL_SIZE}"
