"""The activity page's hourly rollup gives the figures counted from the raw events, whatever the
range, at any moment: before the rollup has run, after, with events stored since (the current
partial hour included), after running twice, and after a rebuild; another team's events never
enter it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from audit import activity
from audit.models import ActivityHour, ActivityRollupWatermark
from audit.services.rollup import activity_rollup_advance, activity_rollup_rebuild
from audit.tasks import roll_up_activity
from governance.services.servers import server_create
from tests.audit.conftest import event, open_session, post_events

# Committed writes: each ingestion its own transaction, as in production (the watermark is a
# transaction id; inside one test transaction every event would share it).
pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime.now(UTC)


def at(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).isoformat().replace("+00:00", "Z")


class Batch:
    """One session's calls (INTENT + RESULT each), seq continuing from `first`."""

    def __init__(self, first: int = 1) -> None:
        self.seq = first - 1
        self.events: list[dict] = []

    def call(self, server, tool, *, hours_ago, status="success", trigger=None, ms=10.0, size=100) -> Batch:
        self.seq += 2
        common = {"call": self.seq // 2, "server": server, "tool": tool, "ts": at(hours_ago)}
        self.events.append(event(self.seq - 1, phase="intent", **common))
        self.events.append(
            event(
                self.seq, phase="result", status=status, trigger=trigger, duration_ms=ms, bytes=size, **common
            )
        )
        return self


def ranges():
    end = datetime.now(UTC) + timedelta(minutes=5)  # the current partial hour, and a little more
    return {
        "24h": activity.time_range(start=end - timedelta(hours=24), end=end),
        "7d": activity.time_range(start=end - timedelta(days=7), end=end),
        "90d": activity.time_range(start=end - timedelta(days=90), end=end),
        "odd edges": activity.time_range(
            start=end - timedelta(hours=50, minutes=17), end=end - timedelta(minutes=31)
        ),
        "inside one hour": activity.time_range(
            start=NOW - timedelta(minutes=50), end=NOW - timedelta(minutes=20)
        ),
    }


def figures(team, rng, *, rollup: bool):
    series = {
        (m, by): activity.activity_series(team=team, rng=rng, metric=m, by=by, rollup=rollup).series
        for m in ("calls", "refusals")
        for by in activity.DIMENSIONS
    }
    servers = activity.usage(team=team, rng=rng, rollup=rollup).rows
    tools = activity.usage(team=team, rng=rng, per_tool=True, rollup=rollup).rows
    both = [t.rows for t in activity.usage_tables(team=team, rng=rng, rollup=rollup)]
    assert both == [servers, tools]
    cost = activity.cost_by_month(team=team, rng=rng, rollup=rollup).rows
    return series, servers, tools, cost


def assert_same(team):
    for name, rng in ranges().items():
        rolled, raw = figures(team, rng, rollup=True), figures(team, rng, rollup=False)
        assert rolled == raw, name


def test_rollup_backed_figures_equal_the_raw_counts_at_every_moment(team, admin, gateway, other_gateway):
    server_create(team=team, actor=admin, slug="github_api", name="GitHub", cost_per_call="0.0100")
    sid = open_session(gateway, role="code_agent")
    first = (
        Batch()
        .call("github_api", "create_pr", hours_ago=30.5, size=1000)
        .call("github_api", "create_pr", hours_ago=26.2, status="fail")
        .call("github_api", "list_prs", hours_ago=5.1, ms=300.0)
        .call("time", "now", hours_ago=5.05, status="blocked", trigger="rate_limit", size=None, ms=None)
        .call("time", "now", hours_ago=0.6)  # the current hour or the one before: partial either way
        .call("time", "now", hours_ago=24 * 40)  # an earlier month
    )
    assert post_events(gateway, sid, first.events).status_code == 200
    other = open_session(other_gateway, role="code_agent")
    assert (
        post_events(
            other_gateway, other, Batch().call("github_api", "create_pr", hours_ago=5).events
        ).status_code
        == 200
    )

    assert_same(team)  # nothing rolled up yet: all from the raw events
    assert roll_up_activity() >= 1  # the beat task: every team
    assert ActivityHour.objects.filter(team=team).count() >= 5
    assert ActivityHour.objects.filter(server="github_api", team=team).exclude(team=team).count() == 0
    assert_same(team)

    # Events stored since the last run, in hours the rollup already holds and in the current one.
    later = (
        Batch(first.seq + 1)
        .call("github_api", "create_pr", hours_ago=5.2)
        .call("time", "now", hours_ago=0.01)
    )
    assert post_events(gateway, sid, later.events).status_code == 200
    assert_same(team)
    activity_rollup_advance(team=team)
    activity_rollup_advance(team=team)  # twice: nothing counted twice
    assert_same(team)
    mark = ActivityRollupWatermark.objects.get(team=team)
    assert mark.updated_at is not None

    # The figures do come from the rollup (a changed row changes them) …
    row = (
        ActivityHour.objects.filter(team=team, server="github_api", tool="create_pr").order_by("hour").first()
    )
    ActivityHour.objects.filter(pk=row.pk).update(calls=row.calls + 1000)
    day = activity.time_range(start=row.hour - timedelta(days=1), end=row.hour + timedelta(days=1))
    assert figures(team, day, rollup=True) != figures(team, day, rollup=False)
    # … and a rebuild counts it again from the events.
    activity_rollup_rebuild(team=team)
    assert_same(team)
    totals = activity.usage(team=team, rng=ranges()["90d"]).rows
    assert {(u.server, u.calls, u.refusals, u.errors) for u in totals} == {
        ("github_api", 4, 0, 1),
        ("time", 4, 1, 0),
    }
