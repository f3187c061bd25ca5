"""Bundle rebuilds through Celery: a real worker on Redis, the debounce, idempotency, eager mode."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from config.celery import app
from governance import tasks
from governance.models import Environment, PolicyBundle
from governance.services import roles as role_services
from governance.services import servers as server_services
from tests.conftest import celery_worker, redis_test_url

BROKER = redis_test_url()  # this test process's own Redis database


def versions(team) -> dict[str, int]:
    out = {}
    for name, version in PolicyBundle.objects.filter(team=team).values_list("environment__name", "version"):
        out[name] = max(out.get(name, 0), version)
    return out


def all_advanced(team, before: dict[str, int]) -> dict[str, int] | None:
    """The versions once every environment has moved past `before` (the worker publishes them one by one)."""
    now = versions(team)
    return now if all(now.get(name, 0) > v for name, v in before.items()) else None


def wait_for(predicate, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


@pytest.fixture
def worker(transactional_db, settings, tmp_path):
    """`celery -A config worker` on Redis and the test database (Celery's default queue, so this
    process's Redis database is emptied around it); eager mode off here."""
    broker = redis.Redis.from_url(BROKER)
    broker.flushdb()
    settings.MCPGOV_BUNDLE_REBUILD_DEBOUNCE_SECONDS = 2.0
    log = tmp_path / "worker.log"
    try:
        with celery_worker(settings, log):
            yield log
    finally:
        broker.flushdb()


@pytest.mark.slow
@pytest.mark.serial
def test_a_policy_change_reaches_a_new_bundle_through_the_worker(worker, team):
    # Creating the team (with eager mode off) queued its first rebuild: the worker publishes v1.
    before = wait_for(lambda: len(v := versions(team)) == 3 and v, 90, "the first bundles", worker)
    assert before == {"development": 1, "staging": 1, "production": 1}
    server_services.server_create(team=team, slug="time", command="python")
    # Nothing ran in this process: the marker is set and the task is queued for the worker.
    assert redis.Redis.from_url(BROKER).exists(tasks._pending_key(team.pk))
    assert versions(team) == before
    after = wait_for(lambda: all_advanced(team, before), 90, "a new version of every bundle", worker)
    assert after == {name: v + 1 for name, v in before.items()}
    latest = (
        PolicyBundle.objects.filter(team=team, environment__name="production").order_by("-version").first()
    )
    assert latest.reason == "server time added" and "time" in latest.content["servers"]
    assert "rebuild_team_bundles" in worker.read_text()


@pytest.mark.slow
@pytest.mark.serial
def test_a_burst_of_changes_makes_one_rebuild(worker, team):
    before = wait_for(lambda: len(v := versions(team)) == 3 and v, 90, "the first bundles", worker)
    time.sleep(0.5)
    runs = worker.read_text().count("succeeded in")
    for i in range(50):
        role_services.role_create(team=team, name=f"agent_{i:02d}")
    after = wait_for(lambda: all_advanced(team, before), 90, "a new version of every bundle", worker)
    time.sleep(3)  # longer than the debounce: a second rebuild would show up by now
    assert versions(team) == {name: v + 1 for name, v in before.items()} == after
    latest = PolicyBundle.objects.filter(team=team, environment__name="staging").order_by("-version").first()
    assert len(latest.content["roles"]) == 50
    assert latest.reason.startswith("role agent_00 added; role agent_01 added")
    assert worker.read_text().count("succeeded in") == runs + 1


# --- without a worker ------------------------------------------------------------------------------------


def test_rebuilding_twice_makes_no_new_version(team):
    first = tasks.rebuild_team_bundles(team.pk, reason="first")
    assert first == {"development": 1, "staging": 1, "production": 1}
    assert tasks.rebuild_team_bundles(team.pk, reason="again") == {}
    assert PolicyBundle.objects.filter(team=team).count() == 3
    assert tasks.rebuild_team_bundles(999_999) == {}


def test_eager_mode_rebuilds_on_commit(team, settings, django_capture_on_commit_callbacks):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    tasks.rebuild_team_bundles(team.pk)
    prod = Environment.objects.get(team=team, name="production")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        role_services.role_create(team=team, name="code_agent")
    assert PolicyBundle.objects.filter(environment=prod).count() == 1  # nothing before the commit
    for callback in callbacks:
        callback()
    latest = PolicyBundle.objects.filter(environment=prod).order_by("-version").first()
    assert (
        latest.version == 2
        and "code_agent" in latest.content["roles"]
        and latest.reason == "role code_agent added"
    )


def test_refresh_task_is_scheduled_by_beat(team):
    entry = app.conf.beat_schedule["governance-refresh-bundles"]
    assert entry["task"] == "governance.tasks.refresh_bundles" and entry["schedule"] <= 30
    assert tasks.refresh_bundles() == 3  # environments without a bundle get their first one
    assert tasks.refresh_bundles() == 0
