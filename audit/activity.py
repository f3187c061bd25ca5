"""Activity selectors: calls, refusals and halts over time, per-server and per-tool usage, gateways,
and cost per server per month — aggregated in SQL, scoped to one team.

Every query starts from the team's restricted queryset (`for_team`). Counting, bucketing
(`Trunc*`, UTC) and sums run in the database on PostgreSQL and SQLite alike; the duration
percentiles use PostgreSQL's `percentile_cont` and, on SQLite, the same linear interpolation in
Python over at most `PERCENTILE_ROW_LIMIT` values.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import (
    Aggregate,
    Count,
    F,
    FloatField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import TruncDay, TruncHour, TruncMonth

from audit.choices import CallStatus, Phase, SessionState
from audit.models import AuditEvent, SessionStateChange

# Dimensions a chart can split by, and the lookup of each on an audit event.
DIMENSIONS = {
    "environment": "session__environment__name",
    "server": "server",
    "role": "session__role",
    "trigger": "trigger",
}
METRICS = ("calls", "refusals", "halts")
# A chart shows this many series; the rest are summed into "other" (patterns stay distinguishable).
MAX_SERIES = 8
OTHER = "other"
# The series of events without a value: calls that fired no trigger, halts with no call behind them
# (e.g. a kill switch thrown in the portal). Spaces: no slug can collide with them.
NONE_LABELS = {"trigger": "no trigger", "server": "no call"}
NONE_LABEL = "none"
# The usage tables show the busiest this-many rows (a gateway reports any server and tool name it is asked for).
USAGE_ROW_LIMIT = 200
# On SQLite the percentiles are computed in Python over the latest this-many durations of the range.
PERCENTILE_ROW_LIMIT = 50_000
# Calls that reached the upstream server (and are billed): a blocked call never left the gateway.
BILLED_STATUSES = (CallStatus.SUCCESS, CallStatus.FAIL)


@dataclass(frozen=True)
class TimeRange:
    start: datetime  # inclusive, UTC
    end: datetime  # exclusive, UTC
    bucket: str  # "hour" | "day"

    @property
    def step(self) -> timedelta:
        return timedelta(hours=1) if self.bucket == "hour" else timedelta(days=1)

    def buckets(self) -> list[datetime]:
        first = _floor(self.start, self.bucket)
        out, at = [], first
        while at < self.end:
            out.append(at)
            at += self.step
        return out


def _floor(value: datetime, bucket: str) -> datetime:
    value = value.astimezone(UTC)
    if bucket == "hour":
        return value.replace(minute=0, second=0, microsecond=0)
    return value.replace(hour=0, minute=0, second=0, microsecond=0)


def time_range(*, start: datetime, end: datetime) -> TimeRange:
    """Hourly buckets up to two days, daily beyond (at most a year: the form bounds it)."""
    bucket = "hour" if end - start <= timedelta(days=2) else "day"
    return TimeRange(start=start.astimezone(UTC), end=end.astimezone(UTC), bucket=bucket)


def _trunc(name: str, bucket: str):
    return (TruncHour if bucket == "hour" else TruncDay)(name, tzinfo=UTC)


def _results(team, rng: TimeRange) -> QuerySet:
    return AuditEvent.objects.for_team(team).filter(phase=Phase.RESULT, ts__gte=rng.start, ts__lt=rng.end)


# --- series over time -----------------------------------------------------------------------------


@dataclass
class Series:
    metric: str
    by: str
    bucket: str
    labels: list[datetime]
    series: dict[str, list[int]]  # dimension value -> count per bucket, biggest total first

    @property
    def totals(self) -> dict[str, int]:
        return {name: sum(values) for name, values in self.series.items()}

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    def rows(self) -> list[tuple[datetime, list[int]]]:
        """The data table beside the chart: one row per bucket with any count, one column per series."""
        names = list(self.series)
        rows = [(at, [self.series[n][i] for n in names]) for i, at in enumerate(self.labels)]
        return [(at, values) for at, values in rows if any(values)]

    def chart(self) -> dict:
        """What static/js/activity-charts.js draws (JSON types only)."""
        return {
            "metric": self.metric,
            "by": self.by,
            "bucket": self.bucket,
            "labels": [at.strftime("%Y-%m-%dT%H:%MZ") for at in self.labels],
            "series": [{"name": n, "data": v} for n, v in self.series.items()],
        }


def _halts(team, rng: TimeRange) -> QuerySet:
    return SessionStateChange.objects.for_team(team).filter(
        to_state=SessionState.HALTED, at__gte=rng.start, at__lt=rng.end
    )


def _halt_server():
    """The server of the blocked call that halted the session (none for a halt from the portal, e.g. a flag)."""
    return Subquery(
        AuditEvent.objects.filter(
            session=OuterRef("session"), phase=Phase.RESULT, status=CallStatus.BLOCKED, ts__lte=OuterRef("at")
        )
        .order_by("-seq")
        .values("server")[:1]
    )


def activity_series(*, team, rng: TimeRange, metric: str, by: str) -> Series:
    """Counts of `metric` (calls | refusals | halts) per time bucket, split by `by` (DIMENSIONS)."""
    if metric not in METRICS or by not in DIMENSIONS:
        raise ValueError(f"unknown metric or dimension: {metric}, {by}")
    if metric == "halts":
        qs = _halts(team, rng)
        key = {
            "environment": F("session__environment__name"),
            "role": F("session__role"),
            "trigger": F("trigger"),
            "server": _halt_server(),
        }[by]
        qs = qs.annotate(key=key, bucket=_trunc("at", rng.bucket))
    else:
        qs = _results(team, rng)
        if metric == "refusals":
            qs = qs.filter(status=CallStatus.BLOCKED)
        qs = qs.annotate(key=F(DIMENSIONS[by]), bucket=_trunc("ts", rng.bucket))
    counts = qs.order_by().values("bucket", "key").annotate(n=Count("pk")).values_list("bucket", "key", "n")
    labels = rng.buckets()
    index = {at: i for i, at in enumerate(labels)}
    raw: dict[str, list[int]] = defaultdict(lambda: [0] * len(labels))
    for bucket, key, n in counts:
        i = index.get(_floor(bucket, rng.bucket))
        if i is not None:
            raw[key or NONE_LABELS.get(by, NONE_LABEL)][i] += n
    ordered = sorted(raw.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    series = dict(ordered)
    if len(ordered) > MAX_SERIES:
        head, tail = ordered[: MAX_SERIES - 1], ordered[MAX_SERIES - 1 :]
        series = dict(head)
        label = f"{OTHER} ({len(tail)})"
        while label in series:  # a reported server or tool name may be anything
            label += "*"
        series[label] = [sum(col) for col in zip(*(v for _, v in tail), strict=True)]
    return Series(metric=metric, by=by, bucket=rng.bucket, labels=labels, series=series)


# --- usage per server and per tool ----------------------------------------------------------------


class PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate `percentile_cont(p) WITHIN GROUP (ORDER BY expr)`."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra):
        fraction = float(fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("a percentile is a fraction between 0 and 1")
        super().__init__(expression, fraction=repr(fraction), **extra)


def percentile_cont(values: list[float], fraction: float) -> float | None:
    """The same value as PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * fraction
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class Usage:
    server: str
    tool: str = ""
    calls: int = 0
    refusals: int = 0
    errors: int = 0
    bytes: int = 0
    last_used: datetime | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None


@dataclass
class UsageTable:
    rows: list[Usage]
    percentiles_sampled: bool = False  # SQLite: computed on the latest PERCENTILE_ROW_LIMIT durations
    more: bool = False  # more than USAGE_ROW_LIMIT rows: the quietest are left out


def usage(*, team, rng: TimeRange, per_tool: bool = False, sql_percentiles: bool | None = None) -> UsageTable:
    """Calls, refusals, errors, bytes, last use and p50/p95 duration per server (or per server and tool).

    `sql_percentiles`: None picks by database (PostgreSQL: in SQL); False forces the Python path.
    """
    keys = ("server", "tool") if per_tool else ("server",)
    qs = _results(team, rng).order_by().values(*keys)
    aggregates = {
        "calls": Count("pk"),
        "refusals": Count("pk", filter=Q(status=CallStatus.BLOCKED)),
        "errors": Count("pk", filter=Q(status=CallStatus.FAIL)),
        "total_bytes": Sum("bytes"),
        "last_used": Max("ts"),
    }
    in_sql = connection.vendor == "postgresql" if sql_percentiles is None else sql_percentiles
    if in_sql:
        aggregates["p50"] = PercentileCont("duration_ms", 0.5)
        aggregates["p95"] = PercentileCont("duration_ms", 0.95)
    rows = {}
    grouped_rows = list(qs.annotate(**aggregates).order_by("-calls", *keys)[: USAGE_ROW_LIMIT + 1])
    more = len(grouped_rows) > USAGE_ROW_LIMIT
    for r in grouped_rows[:USAGE_ROW_LIMIT]:
        rows[tuple(r[k] for k in keys)] = Usage(
            server=r["server"],
            tool=r.get("tool", ""),
            calls=r["calls"],
            refusals=r["refusals"],
            errors=r["errors"],
            bytes=r["total_bytes"] or 0,
            last_used=r["last_used"],
            p50_ms=r.get("p50"),
            p95_ms=r.get("p95"),
        )
    sampled = False
    if not in_sql:
        durations = (
            _results(team, rng)
            .filter(duration_ms__isnull=False)
            .order_by("-ts")
            .values_list(*keys, "duration_ms")
        )
        grouped: dict[tuple, list[float]] = defaultdict(list)
        for count, (*key, ms) in enumerate(durations[: PERCENTILE_ROW_LIMIT + 1], start=1):
            if count > PERCENTILE_ROW_LIMIT:
                sampled = True
                break
            grouped[tuple(key)].append(ms)
        for key, values in grouped.items():
            if key in rows:
                rows[key].p50_ms = percentile_cont(values, 0.5)
                rows[key].p95_ms = percentile_cont(values, 0.95)
    ordered = sorted(rows.values(), key=lambda u: (-u.calls, u.server, u.tool))
    return UsageTable(rows=ordered, percentiles_sampled=sampled, more=more)


# --- gateways -------------------------------------------------------------------------------------


def gateways(*, team, stale_after: timedelta, now: datetime | None = None) -> list[dict]:
    """The team's live enforcement clients: environment, last seen, the bundle version each runs
    and the latest one of its environment."""
    from governance.selectors import gateway_rows
    from governance.services.bundles import latest_versions

    rows = gateway_rows(team=team, stale_after=stale_after, now=now)
    latest = latest_versions(list({r["client"].environment_id for r in rows}))
    for r in rows:
        client = r["client"]
        r["latest"] = latest.get(client.environment_id)
        r["connected"] = client.last_seen_at is not None and not r["stale"]
        r["behind"] = bool(client.bundle_version) and (r["latest"] or 0) > client.bundle_version
    return rows


# --- cost per server per month --------------------------------------------------------------------


@dataclass
class CostRow:
    month: date
    server: str
    calls: int
    cost_per_call: Decimal
    cost: Decimal


@dataclass
class CostReport:
    start: date  # first day of the first month
    end: date  # first day of the month after the last
    rows: list[CostRow] = field(default_factory=list)

    @property
    def last_month(self) -> date:
        return (self.end - timedelta(days=1)).replace(day=1)

    @property
    def total(self) -> Decimal:
        return sum((r.cost for r in self.rows), Decimal("0"))

    def months(self) -> list[tuple[date, list[CostRow], Decimal]]:
        by_month: dict[date, list[CostRow]] = defaultdict(list)
        for r in self.rows:
            by_month[r.month].append(r)
        return [(m, rs, sum((r.cost for r in rs), Decimal("0"))) for m, rs in sorted(by_month.items())]


def _month_start(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(value: datetime) -> datetime:
    return (value.replace(day=28) + timedelta(days=4)).replace(day=1)


def cost_by_month(*, team, rng: TimeRange) -> CostReport:
    """Billed calls (those that reached the server) times the catalogue's cost per call, per server and
    calendar month (UTC), for the months the range touches and the servers billed per call."""
    from governance.models import McpServer

    start = _month_start(rng.start)
    end = _next_month(_month_start(rng.end - timedelta(microseconds=1)))
    prices = dict(
        McpServer.objects.for_team(team).filter(cost_per_call__gt=0).values_list("slug", "cost_per_call")
    )
    report = CostReport(start=start.date(), end=end.date())
    if not prices:
        return report
    counts = (
        AuditEvent.objects.for_team(team)
        .filter(
            phase=Phase.RESULT, status__in=BILLED_STATUSES, server__in=list(prices), ts__gte=start, ts__lt=end
        )
        .annotate(month=TruncMonth("ts", tzinfo=UTC))
        .order_by()
        .values("month", "server")
        .annotate(n=Count("pk"))
        .values_list("month", "server", "n")
    )
    for month, server, n in counts:
        price = prices[server]
        report.rows.append(
            CostRow(
                month=_month_start(month).date(), server=server, calls=n, cost_per_call=price, cost=price * n
            )
        )
    report.rows.sort(key=lambda r: (r.month, -r.cost, r.server))
    return report


# --- cost exports ---------------------------------------------------------------------------------

COST_COLUMNS = ("month", "server", "calls", "cost_per_call", "cost")


def cost_csv_rows(report: CostReport) -> list[list[str]]:
    """The CSV export: a header, then one row per month and server (the csv module quotes)."""
    return [list(COST_COLUMNS)] + [
        [r.month.strftime("%Y-%m"), r.server, str(r.calls), f"{r.cost_per_call:f}", f"{r.cost:.4f}"]
        for r in report.rows
    ]


def cost_log_markdown(report: CostReport, *, team_name: str, generated_at: datetime) -> str:
    """The seed's COST_LOG.md: MCP call counts of the servers billed per call, with their cost."""
    lines = [
        f"# COST_LOG — {_md(team_name)}",
        "",
        "MCP API call counts for the external services billed per call (calls that reached the "
        "server; refused calls never left the gateway), at the catalogue's current cost per call.",
        f"Months {report.start:%Y-%m} to {report.last_month:%Y-%m} (UTC); generated "
        f"{generated_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC by the MCP Governance portal.",
        "",
        "| Month | Server | Calls | Cost per call | Cost |",
        "|---|---|---:|---:|---:|",
    ]
    for month, rows, subtotal in report.months():
        for r in rows:
            lines.append(
                f"| {month:%Y-%m} | {_md(r.server)} | {r.calls} | {r.cost_per_call:f} | {r.cost:.4f} |"
            )
        lines.append(f"| {month:%Y-%m} | **total** | {sum(r.calls for r in rows)} | | **{subtotal:.4f}** |")
    if not report.rows:
        lines.append("| — | no billed calls | 0 | | 0.0000 |")
    lines += ["", f"Total: **{report.total:.4f}**", ""]
    return "\n".join(lines)


def _md(text: str) -> str:
    """Table cell text: a pipe or a line break would end the cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
