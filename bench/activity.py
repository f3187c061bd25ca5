"""The activity page's figures over 24 hours, 7, 30 and 90 days of 800k audit events in PostgreSQL:
counted from the raw events (the code before the hourly rollup) and from the rollup plus the raw
events it does not hold, in the same run; both must give the same figures.

Creates a fresh database (default `mcpgov_bench_activity`), migrates it, and COPYs the events
(INTENT + RESULT per call, spread evenly over the last 100 days, three environments, four roles,
eight servers) straight into the table, then times what the page computes (calls, refusals and
halts charts, per-server and per-tool usage, cost per month) for each range: the median of
`--repeat` runs. Then it adds `--tail` more events without rolling them up (the page counts them
from the raw table) and times the ranges again, and times one rollup run over that tail.

    .venv/bin/python bench/activity.py [--events 800000] [--repeat 5] [--tail 20000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RANGES = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
SPAN = timedelta(days=100)
SERVERS = [
    ("time", "get_current_time"),
    ("git", "git_log"),
    ("github_api", "create_pr"),
    ("github_api", "list_prs"),
    ("filesystem", "read_file"),
    ("filesystem", "write_file"),
    ("search", "query"),
    ("slack", "post"),
]
ROLES = ["code_agent", "review_agent", "ops_agent", "docs_agent"]
STATUSES = ["success"] * 16 + ["fail"] * 2 + ["blocked"] * 2
TRIGGERS = ["unauthorized_server", "rate_limit", "prod_write"]
EVENT_COLUMNS = (
    "session_id",
    "seq",
    "call_id",
    "phase",
    "ts",
    "server",
    "tool",
    "args_summary",
    "status",
    "result_summary",
    "bytes",
    "duration_ms",
    "trigger",
    "bundle_version",
    "prev_hash",
    "hash",
    "received_at",
)


def fresh_database(name: str) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    return f"{base}/{name}".replace("postgresql://", "postgres://", 1)


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def copy_events(
    sessions: list[str], calls: int, *, start: datetime, end: datetime, first_seq: dict, rnd
) -> int:
    """COPY `calls` calls (2 events each) with ts uniform in [start, end), round-robin over sessions."""
    from django.db import connection

    per = {sid: [] for sid in sessions}
    span = (end - start).total_seconds()
    for _ in range(calls):
        per[rnd.choice(sessions)].append(start + timedelta(seconds=rnd.random() * span))
    h = "0" * 64
    n = 0
    with (
        connection.cursor() as cursor,
        cursor.connection.cursor().copy(
            f"COPY audit_auditevent ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
        ) as copy,
    ):
        for sid, stamps in per.items():
            seq = first_seq.get(sid, 0)
            for at in sorted(stamps):
                server, tool = SERVERS[rnd.randrange(len(SERVERS))]
                status = rnd.choice(STATUSES)
                trigger = rnd.choice(TRIGGERS) if status == "blocked" else None
                seq += 1
                call = f"{sid[:8]}-{seq}"
                copy.write_row(
                    (
                        sid,
                        seq,
                        call,
                        "intent",
                        at,
                        server,
                        tool,
                        "x=1",
                        None,
                        "",
                        None,
                        None,
                        None,
                        7,
                        h,
                        h,
                        at,
                    )
                )
                seq += 1
                copy.write_row(
                    (
                        sid,
                        seq,
                        call,
                        "result",
                        at,
                        server,
                        tool,
                        "x=1",
                        status,
                        "ok",
                        rnd.randrange(50, 5000),
                        rnd.random() * 400,
                        trigger,
                        7,
                        h,
                        h,
                        at,
                    )
                )
                n += 2
            first_seq[sid] = seq
    return n


def page_figures(team, rng, *, rollup: bool):
    """What the activity page computes for a range (audit/activity_views.py), comparable."""
    from audit import activity

    series = [
        activity.activity_series(team=team, rng=rng, metric=m, by="environment", rollup=rollup).series
        for m in activity.METRICS
    ]
    if rollup:  # the page as it is now: both usage tables' percentiles in one scan
        servers, tools = (t.rows for t in activity.usage_tables(team=team, rng=rng))
    else:  # the page before: each table on its own
        servers = activity.usage(team=team, rng=rng, rollup=False).rows
        tools = activity.usage(team=team, rng=rng, per_tool=True, rollup=False).rows
    cost = activity.cost_by_month(team=team, rng=rng, rollup=rollup).rows
    return series, servers, tools, cost


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", default="mcpgov_bench_activity")
    parser.add_argument("--events", type=int, default=800_000)
    parser.add_argument("--sessions", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tail", type=int, default=20_000, help="events stored after the last rollup run")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    url = fresh_database(args.database)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_DEBUG": "1",
        "CELERY_BROKER_URL": "",
        "DJANGO_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    print(f"database {args.database}: migrating…", flush=True)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.db import connection

    from audit import activity
    from audit.models import ActivityHour, AgentSession
    from audit.services.rollup import activity_rollup_advance
    from governance.models import McpServer
    from governance.services.clients import client_create
    from governance.services.teams import team_bootstrap

    try:
        rnd = random.Random(13)
        team = team_bootstrap(slug="bench", name="Bench")
        envs = list(team.environments.order_by("pk"))
        issued = {e.pk: client_create(team=team, environment=e, name=f"gw-{e.name}").client for e in envs}
        for slug in ("github_api", "search", "slack"):
            McpServer.objects.create(team=team, slug=slug, name=slug, cost_per_call="0.0020")
        now = datetime.now(UTC)
        sessions = []
        for i in range(args.sessions):
            e = envs[i % len(envs)]
            sid = str(uuid.uuid4())
            AgentSession.objects.create(
                id=sid,
                team=team,
                environment=e,
                client=issued[e.pk],
                role=ROLES[i % len(ROLES)],
                agent=f"bench-{i}",
                started_at=now - SPAN,
            )
            sessions.append(sid)
        seqs: dict[str, int] = {}
        t0 = time.perf_counter()
        stored = copy_events(sessions, args.events // 2, start=now - SPAN, end=now, first_seq=seqs, rnd=rnd)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # as autovacuum would have (the planner needs the sessions' stats too)
        print(f"stored {stored:,} events in {time.perf_counter() - t0:.0f} s", flush=True)

        t0 = time.perf_counter()
        advance = activity_rollup_advance(team=team)
        first_run = time.perf_counter() - t0
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE audit_activityhour")
        print(
            f"first rollup run: {first_run:.1f} s, {ActivityHour.objects.count():,} rollup rows "
            f"({advance.rows:,} written)",
            flush=True,
        )

        def report(title: str) -> bool:
            print(
                f"\n{title} (median of {args.repeat}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
            )
            print(f"{'range':>6} {'raw events':>11} {'rollup':>9} {'ratio':>7}  same figures")
            same_all = True
            end = datetime.now(UTC)
            for name, span in RANGES.items():
                rng = activity.time_range(start=end - span, end=end)
                raw_ms, raw = timed(lambda rng=rng: page_figures(team, rng, rollup=False), args.repeat)
                roll_ms, rolled = timed(lambda rng=rng: page_figures(team, rng, rollup=True), args.repeat)
                same = raw == rolled
                same_all &= same
                print(f"{name:>6} {raw_ms:>9.0f} ms {roll_ms:>6.0f} ms {raw_ms / roll_ms:>6.1f}x  {same}")
            return same_all

        ok = report("the page's figures, rollup up to date")
        connection.close()
        tail_calls = args.tail // 2
        copy_events(
            sessions,
            tail_calls,
            start=now - timedelta(hours=2),
            end=datetime.now(UTC),
            first_seq=seqs,
            rnd=rnd,
        )
        ok &= report(
            f"with {args.tail:,} events stored since the last rollup run (counted from the raw table)"
        )
        t0 = time.perf_counter()
        activity_rollup_advance(team=team)
        print(f"\nrollup run over those {args.tail:,} events: {(time.perf_counter() - t0) * 1000:.0f} ms")
        ok &= report("after that run")
        print("\nfigures identical in every range:", ok)
        return 0 if ok else 1
    finally:
        connection.close()
        if not args.keep:
            drop_database(args.database)


if __name__ == "__main__":
    raise SystemExit(main())
