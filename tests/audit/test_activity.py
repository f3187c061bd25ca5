"""The activity page: series, usage and cost aggregated in SQL from events stored through the real
ingestion API, the exports (CSV, COST_LOG.md), and who may see what (team-scoped, 404 without a team)."""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.urls import reverse

from audit import activity
from audit.forms import ActivityForm
from governance.services.servers import server_create
from tests.audit.conftest import event, issue_client, open_session, post_events
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 11, 24, tzinfo=UTC)
RANGE = activity.time_range(start=DAY - timedelta(days=1), end=DAY + timedelta(days=2))  # daily buckets
QUERY = {"range": "custom", "start": "2026-11-23", "end": "2026-11-25", "by": "environment"}
# The halts happen now (the portal stamps a state change when it arrives): a range up to today.
QUERY_TO_TODAY = {**QUERY, "end": datetime.now(UTC).date().isoformat()}


def around_now():
    now = datetime.now(UTC)
    return activity.time_range(start=now - timedelta(hours=1), end=now + timedelta(hours=1))


def ts(hours: float) -> str:
    return (DAY + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


class Calls:
    """Builds one session's event batch: an INTENT and a RESULT per call, in order."""

    def __init__(self) -> None:
        self.batch: list[dict] = []

    def add(self, server, tool, *, at, status="success", ms=None, size=100, trigger=None) -> Calls:
        seq = len(self.batch) + 1
        common = {"server": server, "tool": tool, "call": seq, "ts": ts(at)}
        self.batch.append(event(seq, phase="intent", **common))
        self.batch.append(
            event(
                seq + 1, phase="result", status=status, duration_ms=ms, bytes=size, trigger=trigger, **common
            )
        )
        return self


@pytest.fixture
def world(team, other_team, gateway, other_gateway):
    """acme: a development session (code_agent) and a staging one (database_agent) with known calls;
    a halt in each. globex: one session on a server with acme's name, which acme must never count."""
    staging = issue_client(team, team.environments.get(name="staging"), "gw-stg")
    from rest_framework.test import APIClient

    stg = APIClient()
    stg.credentials(HTTP_AUTHORIZATION=f"Bearer {staging.token}")

    dev_sid = open_session(gateway, role="code_agent")
    dev = (
        Calls()
        .add("github_api", "create_pr", at=1, ms=10.0, size=1000)
        .add("github_api", "create_pr", at=2, ms=20.0, size=2000)
        .add("github_api", "list_prs", at=2.5, ms=30.0, size=3000, status="fail")
        .add("github_api", "create_pr", at=3, ms=40.0, size=4000)
        .add("time", "get_current_time", at=25, status="blocked", trigger="write_in_read_session", size=None)
    )
    assert post_events(gateway, dev_sid, dev.batch).status_code == 200
    r = gateway.patch(
        f"/api/v1/gateway/sessions/{dev_sid}/",
        {"state": "halted", "trigger": "write_in_read_session", "reason": "write in a read-only session"},
        format="json",
    )
    assert r.status_code == 200, r.content

    stg_sid = open_session(stg, role="database_agent")
    calls = Calls().add("time", "get_current_time", at=4, ms=5.0, size=50)
    calls.add("time", "get_current_time", at=26, status="blocked", trigger="rate_limit", size=None)
    assert post_events(stg, stg_sid, calls.batch).status_code == 200
    r = stg.patch(
        f"/api/v1/gateway/sessions/{stg_sid}/",
        {"state": "halted", "trigger": "rate_limit", "reason": "limit"},
        format="json",
    )
    assert r.status_code == 200, r.content

    other_sid = open_session(other_gateway, role="code_agent")
    other = Calls()
    for i in range(5):
        other.add("github_api", "create_pr", at=1 + i, ms=999.0)
    assert post_events(other_gateway, other_sid, other.batch).status_code == 200
    return {"dev": dev_sid, "stg": stg_sid}


def _day(series, name):
    return dict(zip([d.date().isoformat() for d in series.labels], series.series.get(name, []), strict=True))


# --- aggregation ----------------------------------------------------------------------------------


def test_calls_refusals_and_halts_per_day_by_environment_only_count_the_team(team, world):
    calls = activity.activity_series(team=team, rng=RANGE, metric="calls", by="environment")
    assert [d.date().isoformat() for d in calls.labels] == ["2026-11-23", "2026-11-24", "2026-11-25"]
    assert _day(calls, "development") == {"2026-11-23": 0, "2026-11-24": 4, "2026-11-25": 1}
    assert _day(calls, "staging") == {"2026-11-23": 0, "2026-11-24": 1, "2026-11-25": 1}
    assert calls.total == 7  # globex's five calls are not counted
    refusals = activity.activity_series(team=team, rng=RANGE, metric="refusals", by="trigger")
    assert refusals.totals == {"rate_limit": 1, "write_in_read_session": 1}
    assert activity.activity_series(team=team, rng=RANGE, metric="halts", by="role").totals == {}
    halts = activity.activity_series(team=team, rng=around_now(), metric="halts", by="role")
    assert halts.totals == {"code_agent": 1, "database_agent": 1}


def test_halts_by_server_name_the_server_of_the_blocked_call_that_halted(team, world):
    halts = activity.activity_series(team=team, rng=around_now(), metric="halts", by="server")
    assert halts.totals == {"time": 2}
    by_trigger = activity.activity_series(team=team, rng=around_now(), metric="halts", by="trigger")
    assert by_trigger.totals == {"rate_limit": 1, "write_in_read_session": 1}
    calls = activity.activity_series(team=team, rng=RANGE, metric="calls", by="server")
    assert calls.totals == {"github_api": 4, "time": 3}


def test_hourly_buckets_for_a_short_range(team, world):
    rng = activity.time_range(start=DAY, end=DAY + timedelta(hours=6))
    assert rng.bucket == "hour"
    calls = activity.activity_series(team=team, rng=rng, metric="calls", by="role")
    assert calls.series["code_agent"] == [0, 1, 2, 1, 0, 0]
    assert calls.series["database_agent"] == [0, 0, 0, 0, 1, 0]
    # the table beside the chart leaves out the hours with nothing
    assert calls.rows() == [
        (DAY + timedelta(hours=h), v) for h, v in ((1, [1, 0]), (2, [2, 0]), (3, [1, 0]), (4, [0, 1]))
    ]


def test_more_series_than_the_chart_holds_are_summed_into_other(team, gateway):
    sid = open_session(gateway)
    calls = Calls()
    for i in range(activity.MAX_SERIES + 2):
        for _ in range(i + 1):
            calls.add(f"srv{i:02d}", "t", at=1)
    assert post_events(gateway, sid, calls.batch).status_code == 200
    series = activity.activity_series(team=team, rng=RANGE, metric="calls", by="server")
    assert len(series.series) == activity.MAX_SERIES
    assert next(iter(series.series)) == "srv09"  # the biggest first
    assert series.totals["other (3)"] == 1 + 2 + 3  # srv00..srv02
    assert series.total == sum(range(1, activity.MAX_SERIES + 3))


def test_a_reported_server_named_like_the_other_series_keeps_its_count(team, gateway):
    sid = open_session(gateway)
    calls = Calls()
    for i in range(activity.MAX_SERIES + 2):
        for _ in range(20 if i == 0 else 1):
            calls.add("other (3)" if i == 0 else f"srv{i:02d}", "t", at=1)
    assert post_events(gateway, sid, calls.batch).status_code == 200
    series = activity.activity_series(team=team, rng=RANGE, metric="calls", by="server")
    assert series.totals["other (3)"] == 20 and series.totals["other (3)*"] == 3


def test_usage_per_server_and_per_tool(team, world):
    table = activity.usage(team=team, rng=RANGE)
    github, time_ = table.rows
    assert (github.server, github.calls, github.refusals, github.errors, github.bytes) == (
        "github_api",
        4,
        0,
        1,
        10000,
    )
    assert github.last_used == DAY + timedelta(hours=3)
    # percentile_cont over 10, 20, 30, 40
    assert github.p50_ms == pytest.approx(25.0) and github.p95_ms == pytest.approx(38.5)
    assert (time_.server, time_.calls, time_.refusals, time_.bytes) == ("time", 3, 2, 50)
    assert time_.p50_ms == pytest.approx(5.0)  # refused calls have no duration
    tools = {(u.server, u.tool): u for u in activity.usage(team=team, rng=RANGE, per_tool=True).rows}
    assert tools["github_api", "create_pr"].calls == 3 and tools["github_api", "list_prs"].errors == 1
    assert tools["github_api", "create_pr"].p50_ms == pytest.approx(20.0)


def test_usage_shows_the_busiest_rows_only(team, world, monkeypatch):
    monkeypatch.setattr(activity, "USAGE_ROW_LIMIT", 1)
    table = activity.usage(team=team, rng=RANGE, per_tool=True)
    assert table.more and [(u.server, u.tool, u.calls) for u in table.rows] == [
        ("github_api", "create_pr", 3)
    ]
    servers = activity.usage(team=team, rng=RANGE)
    assert servers.more and [u.server for u in servers.rows] == ["github_api"]


def test_python_percentiles_equal_the_databases(team, world):
    python = activity.usage(team=team, rng=RANGE, per_tool=True, sql_percentiles=False).rows
    assert [(u.p50_ms, u.p95_ms) for u in python if u.tool == "create_pr"] == [
        (20.0, pytest.approx(38.0))
    ]  # 10, 20, 40
    if connection.vendor != "postgresql":
        pytest.skip("percentile_cont is PostgreSQL's")
    sql = activity.usage(team=team, rng=RANGE, per_tool=True, sql_percentiles=True).rows
    assert [(u.server, u.tool, u.p50_ms, u.p95_ms) for u in sql] == [
        (u.server, u.tool, pytest.approx(u.p50_ms), pytest.approx(u.p95_ms)) for u in python
    ]


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [([], 0.5, None), ([7.0], 0.95, 7.0), ([4.0, 1.0, 3.0, 2.0], 0.5, 2.5), ([1.0, 2.0, 3.0], 0.95, 2.9)],
)
def test_percentile_cont_interpolates_like_postgresql(values, fraction, expected):
    assert activity.percentile_cont(values, fraction) == (
        None if expected is None else pytest.approx(expected)
    )


def test_percentile_aggregate_refuses_a_fraction_outside_0_1():
    with pytest.raises(ValueError, match="fraction"):
        activity.PercentileCont("duration_ms", 1.5)


# --- cost -----------------------------------------------------------------------------------------


@pytest.fixture
def prices(team, other_team):
    server_create(
        team=team,
        slug="github_api",
        transport="http",
        url="https://api.github.com/mcp",
        cost_per_call=Decimal("0.0050"),
    )
    server_create(team=team, slug="time", transport="stdio", command="mcp-server-time")  # free: not listed
    # globex bills the same slug at another price: never mixed with acme's
    server_create(
        team=other_team,
        slug="github_api",
        transport="http",
        url="https://api.github.com/mcp",
        cost_per_call=Decimal("9.0000"),
    )


def test_cost_counts_calls_that_reached_the_server_at_the_catalogue_price(team, world, prices, gateway):
    # a call in October, to see a second month
    sid = open_session(gateway)
    october = Calls().add("github_api", "create_pr", at=-24 * 30, ms=3.0)
    assert post_events(gateway, sid, october.batch).status_code == 200
    rng = activity.time_range(start=datetime(2026, 10, 30, tzinfo=UTC), end=DAY + timedelta(days=1))
    report = activity.cost_by_month(team=team, rng=rng)
    assert (report.start.isoformat(), report.end.isoformat()) == ("2026-10-01", "2026-12-01")
    got = [(r.month.isoformat(), r.server, r.calls, r.cost) for r in report.rows]
    # November: 3 successes + 1 failure (the failed call reached the server too)
    assert got == [
        ("2026-10-01", "github_api", 1, Decimal("0.0050")),
        ("2026-11-01", "github_api", 4, Decimal("0.0200")),
    ]
    assert report.total == Decimal("0.0250")


def test_cost_csv_and_cost_log_exports(client, viewer, world, prices):
    client.force_login(viewer)
    response = client.get(reverse("audit:activity-cost-csv"), QUERY)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="cost-acme-2026-11-to-2026-11.csv"'
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows == [
        ["month", "server", "calls", "cost_per_call", "cost"],
        ["2026-11", "github_api", "4", "0.0050", "0.0200"],
    ]
    md = client.get(reverse("audit:activity-cost-log"), QUERY)
    assert md.status_code == 200 and md["Content-Type"].startswith("text/markdown")
    assert md["Content-Disposition"] == 'attachment; filename="COST_LOG.md"'
    text = md.content.decode()
    assert text.startswith("# COST_LOG — Acme\n")
    assert "| Month | Server | Calls | Cost per call | Cost |" in text
    assert "| 2026-11 | github_api | 4 | 0.0050 | 0.0200 |" in text
    assert "| 2026-11 | **total** | 4 | | **0.0200** |" in text
    assert "Total: **0.0200**" in text and "9.0000" not in text


def test_cost_log_escapes_table_syntax_in_the_team_name():
    report = activity.CostReport(start=DAY.date().replace(day=1), end=datetime(2026, 12, 1).date())
    text = activity.cost_log_markdown(report, team_name="A|B\nC", generated_at=DAY)
    assert text.splitlines()[0] == "# COST_LOG — A\\|B C"
    assert "| — | no billed calls | 0 | | 0.0000 |" in text


# --- the page and who may see it ------------------------------------------------------------------


def test_anonymous_user_is_sent_to_login():
    for name in ("audit:activity", "audit:activity-cost-csv", "audit:activity-cost-log"):
        response = Client().get(reverse(name))
        assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_signed_in_user_without_a_team_gets_404():
    c = Client()
    c.force_login(UserFactory(username="no-team-user"))
    for name in ("audit:activity", "audit:activity-cost-csv", "audit:activity-cost-log"):
        response = c.get(reverse(name))
        assert response.status_code == 404
        assert "You are not a member of any team yet" in response.content.decode()


def test_a_viewer_sees_charts_tables_gateways_and_cost(client, viewer, world, prices, issued):
    client.force_login(viewer)
    response = client.get(reverse("audit:activity"), QUERY_TO_TODAY)
    assert response.status_code == 200
    html = response.content.decode()
    ctx = response.context
    assert [c["series"].total for c in ctx["charts"]] == [7, 2, 2]
    assert 'id="chart-calls-data" type="application/json"' in html
    assert 'data-activity-chart="chart-calls-data"' in html
    assert "development 5, staging 2" in html  # the chart's text alternative
    assert "vendor/chart.js/chart.umd.min.js" in html and "js/activity-charts.js" in html
    assert "<td>gw-dev</td>" in html and "<td>gw-stg</td>" in html
    assert "0.0200" in html


def test_an_outsider_sees_only_their_own_teams_activity(client, outsider, world, prices):
    client.force_login(outsider)
    response = client.get(reverse("audit:activity"), QUERY)
    assert response.status_code == 200
    assert [c["series"].total for c in response.context["charts"]] == [5, 0, 0]  # globex's own calls
    html = response.content.decode()
    assert "gw-dev" not in html and "gw-stg" not in html and "staging 2" not in html
    assert [r.calls for r in response.context["cost"].rows] == [5]  # at globex's own price
    rows = list(
        csv.reader(io.StringIO(client.get(reverse("audit:activity-cost-csv"), QUERY).content.decode()))
    )
    assert rows[1:] == [["2026-11", "github_api", "5", "9.0000", "45.0000"]]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"range": "custom", "start": "2026-11-25"}, "A custom range needs both dates."),
        ({"range": "custom", "start": "2026-11-25", "end": "2026-11-01"}, "The range ends before it starts."),
        ({"range": "custom", "start": "2024-01-01", "end": "2026-11-01"}, "A range spans at most 366 days."),
        ({"range": "forever"}, "Select a valid choice."),
        ({"by": "payload"}, "Select a valid choice."),
    ],
)
def test_a_bad_range_is_a_400_with_the_reason_and_the_default_range(client, viewer, query, message):
    client.force_login(viewer)
    response = client.get(reverse("audit:activity"), query)
    assert response.status_code == 400
    assert message in response.content.decode()
    rng = response.context["range"]
    assert rng.end - rng.start == timedelta(days=7)


def test_form_presets_end_now():
    now = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
    rng = ActivityForm({"range": "24h"}).time_range(now)
    assert (rng.start, rng.end, rng.bucket) == (now - timedelta(hours=24), now, "hour")
    assert len(rng.buckets()) == 25  # 12:00 yesterday … 12:00 today


def test_the_page_runs_no_inline_script_and_the_csp_allows_the_vendored_one(client, viewer, world):
    client.force_login(viewer)
    response = client.get(reverse("audit:activity"), QUERY)
    html = response.content.decode()
    import re

    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag or 'type="application/json"' in tag, tag
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_the_vendored_chart_library_is_the_published_file():
    path = settings.BASE_DIR / "static" / "vendor" / "chart.js" / "chart.umd.min.js"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == "87364cc2b2a76a6684929e7d6b80b18a897794db38400caff1fcf1791c6925d2"
    assert (path.parent / "LICENSE.md").read_text().startswith("The MIT License (MIT)")


def test_the_page_runs_a_fixed_number_of_queries(
    client, viewer, world, prices, django_assert_max_num_queries
):
    client.force_login(viewer)
    with django_assert_max_num_queries(40):  # a count per chart and table, not per row
        assert client.get(reverse("audit:activity"), QUERY_TO_TODAY).status_code == 200
