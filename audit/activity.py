"""Activity selectors: calls, refusals and halts over time, per-server and per-tool usage, gateways,
and cost per server per month — aggregated in SQL, scoped to one team.

Every query starts from the team's restricted queryset (`for_team`). Counting, bucketing
(`Trunc*`, UTC) and sums run in the database on PostgreSQL and SQLite alike; the duration
percentiles use PostgreSQL's `percentile_cont` and, on SQLite, the same linear interpolation in
Python over at most `PERCENTILE_ROW_LIMIT` values.

Call counts, bytes and last use come from the hourly rollup (`ActivityHour`, kept by
audit/services/rollup.py) for the whole hours inside the range, plus, from the raw events, the
partial hours at the range's ends and the events the rollup does not hold yet (above its
watermark), all read in one snapshot: the same figures as counting the raw events
(`call_tallies(..., rollup=False)`), at any moment.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.db import connection, transaction
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
from audit.models import ActivityHour, ActivityRollupWatermark, AuditEvent, SessionStateChange

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


# --- call counts: the rollup plus the raw events it does not hold ----------------------------------

# A tally's grouping keys: the lookup on a raw event, and on a rollup row.
TALLY_KEYS = {
    "environment": ("session__environment__name", "environment__name"),
    "role": ("session__role", "role"),
    "server": ("server", "server"),
    "tool": ("tool", "tool"),
    "trigger": ("trigger", "trigger"),
    "status": ("status", "status"),
}
_TRUNC = {"hour": TruncHour, "day": TruncDay, "month": TruncMonth}


@dataclass
class Tally:
    calls: int = 0
    refusals: int = 0
    errors: int = 0
    bytes: int = 0
    last_used: datetime | None = None

    def add(self, calls: int, refusals: int, errors: int, size: int | None, last: datetime | None) -> None:
        self.calls += calls
        self.refusals += refusals
        self.errors += errors
        self.bytes += size or 0
        if last is not None and (self.last_used is None or last > self.last_used):
            self.last_used = last


def _ceil_hour(value: datetime) -> datetime:
    floor = _floor(value, "hour")
    return floor if floor == value else floor + timedelta(hours=1)


class _Snapshot:
    """One snapshot for the rollup, its watermark and the raw events (REPEATABLE READ on
    PostgreSQL): a rollup run committing between two of the reads could otherwise count a batch
    twice or not at all. Inside a caller's transaction, that transaction's snapshot rules."""

    def __enter__(self):
        self._atomic = None
        if connection.vendor == "postgresql" and not connection.in_atomic_block:
            self._atomic = transaction.atomic()
            self._atomic.__enter__()
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return self

    def __exit__(self, *exc):
        if self._atomic is not None:
            return self._atomic.__exit__(*exc)
        return False


def _grouped(
    qs: QuerySet, *, keys: tuple[str, ...], lookups: dict[str, str], bucket: str | None, at: str, counts: dict
) -> Iterable[dict]:
    named = {f"k_{k}": F(lookups[k]) for k in keys}
    if bucket is not None:
        named["k_bucket"] = _TRUNC[bucket](at, tzinfo=UTC)
    return qs.order_by().annotate(**named).values(*named).annotate(**counts)


def call_tallies(
    *,
    team,
    start: datetime,
    end: datetime,
    keys: tuple[str, ...],
    bucket: str | None = None,
    statuses: Iterable[str] | None = None,
    servers: Iterable[str] | None = None,
    rollup: bool = True,
) -> dict[tuple, Tally]:
    """RESULT events of [start, end) counted per `keys` (TALLY_KEYS) and, with `bucket` (hour, day,
    month; UTC), per time bucket first: {(bucket?, *key values): Tally}. `rollup=False` counts the
    raw events only (the reference the rollup must equal)."""
    statuses = list(statuses) if statuses is not None else None
    servers = list(servers) if servers is not None else None
    out: dict[tuple, Tally] = defaultdict(Tally)
    raw_lookups = {k: TALLY_KEYS[k][0] for k in keys}
    raw_counts = {
        "n": Count("pk"),
        "n_blocked": Count("pk", filter=Q(status=CallStatus.BLOCKED)),
        "n_fail": Count("pk", filter=Q(status=CallStatus.FAIL)),
        "n_bytes": Sum("bytes"),
        "n_last": Max("ts"),
    }

    def raw(extra: Q) -> QuerySet:
        qs = AuditEvent.objects.for_team(team).filter(extra, phase=Phase.RESULT)
        if statuses is not None:
            qs = qs.filter(status__in=statuses)
        if servers is not None:
            qs = qs.filter(server__in=servers)
        return qs

    def take(rows: Iterable[dict], *, from_rollup: bool) -> None:
        for r in rows:
            key = tuple(r[f"k_{k}"] for k in keys)
            if from_rollup:  # the rollup keeps an event's null status and trigger as ""
                key = tuple(
                    None if k in ("status", "trigger") and v == "" else v
                    for k, v in zip(keys, key, strict=True)
                )
            if bucket is not None:
                key = (_floor_to(r["k_bucket"], bucket), *key)
            out[key].add(r["n"], r["n_blocked"], r["n_fail"], r["n_bytes"], r["n_last"])

    def raw_rows(extra: Q) -> Iterable[dict]:
        return _grouped(raw(extra), keys=keys, lookups=raw_lookups, bucket=bucket, at="ts", counts=raw_counts)

    first, last = _ceil_hour(start), _floor(end, "hour")
    with _Snapshot():
        if not rollup or first >= last:
            take(raw_rows(Q(ts__gte=start, ts__lt=end)), from_rollup=False)
            return dict(out)
        # the partial hours at both ends, every event
        take(raw_rows(Q(ts__gte=start, ts__lt=first) | Q(ts__gte=last, ts__lt=end)), from_rollup=False)
        # the whole hours: the events above the watermark from the raw table ...
        # (read first, as a value: the planner then sees that few events are above it and takes
        # the stream-order index instead of scanning the range by ts)
        column = "xact" if connection.vendor == "postgresql" else "event_id"
        mark = ActivityRollupWatermark.objects.filter(team=team).values_list(column, flat=True).first() or 0
        above = Q(xact__gte=mark) if column == "xact" else Q(id__gt=mark)
        take(raw_rows(above & Q(ts__gte=first, ts__lt=last)), from_rollup=False)
        # ... and the rest from the rollup
        hours = ActivityHour.objects.for_team(team).filter(hour__gte=first, hour__lt=last)
        if statuses is not None:
            hours = hours.filter(status__in=statuses)
        if servers is not None:
            hours = hours.filter(server__in=servers)
        rollup_counts = {
            "n": Sum("calls"),
            "n_blocked": Sum("calls", filter=Q(status=CallStatus.BLOCKED), default=0),
            "n_fail": Sum("calls", filter=Q(status=CallStatus.FAIL), default=0),
            "n_bytes": Sum("bytes"),
            "n_last": Max("last_ts"),
        }
        rollup_lookups = {k: TALLY_KEYS[k][1] for k in keys}
        take(
            _grouped(
                hours, keys=keys, lookups=rollup_lookups, bucket=bucket, at="hour", counts=rollup_counts
            ),
            from_rollup=True,
        )
    return dict(out)


def _floor_to(value: datetime, bucket: str) -> datetime:
    if bucket == "month":
        return _month_start(value)
    return _floor(value, bucket)


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


def activity_series(*, team, rng: TimeRange, metric: str, by: str, rollup: bool = True) -> Series:
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
        counts = (
            qs.order_by().values("bucket", "key").annotate(n=Count("pk")).values_list("bucket", "key", "n")
        )
    else:
        tallies = call_tallies(
            team=team,
            start=rng.start,
            end=rng.end,
            keys=(by,),
            bucket=rng.bucket,
            statuses=[CallStatus.BLOCKED] if metric == "refusals" else None,
            rollup=rollup,
        )
        counts = [(bucket, key, t.calls) for (bucket, key), t in tallies.items()]
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


def usage(
    *,
    team,
    rng: TimeRange,
    per_tool: bool = False,
    sql_percentiles: bool | None = None,
    rollup: bool = True,
    percentiles: dict[tuple, tuple[float | None, float | None]] | None = None,
) -> UsageTable:
    """Calls, refusals, errors, bytes, last use and p50/p95 duration per server (or per server and tool).

    `sql_percentiles`: None picks by database (PostgreSQL: in SQL); False forces the Python path.
    `percentiles`: the SQL percentiles already computed (`usage_tables` computes both tables' at once).
    """
    keys = ("server", "tool") if per_tool else ("server",)
    tallies = call_tallies(team=team, start=rng.start, end=rng.end, keys=keys, rollup=rollup)
    busiest = sorted(tallies.items(), key=lambda kv: (-kv[1].calls, *kv[0]))
    more = len(busiest) > USAGE_ROW_LIMIT
    rows = {
        key: Usage(
            server=key[0],
            tool=key[1] if per_tool else "",
            calls=t.calls,
            refusals=t.refusals,
            errors=t.errors,
            bytes=t.bytes,
            last_used=t.last_used,
        )
        for key, t in busiest[:USAGE_ROW_LIMIT]
    }
    in_sql = connection.vendor == "postgresql" if sql_percentiles is None else sql_percentiles
    if in_sql and rows:
        if percentiles is None:
            percentiles = _sql_percentiles(team, rng, per_server=not per_tool, per_tool=per_tool)
        for key, (p50, p95) in percentiles.items():
            if key in rows:
                rows[key].p50_ms, rows[key].p95_ms = p50, p95
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


_PERCENTILES_SQL = """
SELECT e.server, {tool},
       PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY e.duration_ms),
       PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY e.duration_ms)
FROM audit_auditevent e JOIN audit_agentsession s ON s.id = e.session_id
WHERE s.team_id = %s AND e.phase = 'result' AND e.ts >= %s AND e.ts < %s AND e.duration_ms IS NOT NULL
GROUP BY GROUPING SETS ({sets})
"""


def _sql_percentiles(team, rng: TimeRange, *, per_server: bool, per_tool: bool) -> dict[tuple, tuple]:
    """p50/p95 of `duration_ms` per server (keys (server,)) and/or per tool ((server, tool)), exact
    (PostgreSQL's percentile_cont) and in one scan of the range's events: they cannot be rolled up.
    The one read of raw events the activity page still makes over the whole range."""
    sets = ", ".join(s for s, on in (("(e.server)", per_server), ("(e.server, e.tool)", per_tool)) if on)
    tool = "e.tool, GROUPING(e.tool)" if per_tool else "'', 1"
    with connection.cursor() as cursor:
        cursor.execute(_PERCENTILES_SQL.format(sets=sets, tool=tool), [team.pk, rng.start, rng.end])
        return {
            ((server,) if whole_server else (server, tool)): (p50, p95)
            for server, tool, whole_server, p50, p95 in cursor.fetchall()
        }


def usage_tables(*, team, rng: TimeRange, rollup: bool = True) -> tuple[UsageTable, UsageTable]:
    """The page's two usage tables, per server and per tool; on PostgreSQL their percentiles in one scan."""
    shared = None
    if connection.vendor == "postgresql":
        shared = _sql_percentiles(team, rng, per_server=True, per_tool=True)
    return (
        usage(team=team, rng=rng, rollup=rollup, percentiles=shared),
        usage(team=team, rng=rng, per_tool=True, rollup=rollup, percentiles=shared),
    )


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


def cost_by_month(*, team, rng: TimeRange, rollup: bool = True) -> CostReport:
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
    tallies = call_tallies(
        team=team,
        start=start,
        end=end,
        keys=("server",),
        bucket="month",
        statuses=BILLED_STATUSES,
        servers=list(prices),
        rollup=rollup,
    )
    counts = [(month, server, t.calls) for (month, server), t in tallies.items()]
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
