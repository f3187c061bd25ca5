"""PostgreSQL connections of the portal under load: peak vs the configured pool, and 5xx answers.

Starts the portal under uvicorn with 2 workers on its own PostgreSQL database (each worker has
a psycopg pool of DATABASE_POOL_MAX_SIZE connections, `docs/deploy.md`), drives 50 concurrent
clients on loopback — signed-in page views, audit ingestion, bundle long polls, session-control
long polls and kill-switch toggles, bounded in requests and in time — and samples
`pg_stat_activity` every 50 ms for the connections of the portal's processes (named with
PGAPPNAME). Goal: peak <= pool size x workers, and no 5xx.

    .venv/bin/python bench/db_connections.py [--clients 50] [--seconds 20] [--workers 2] [--pool 10]
        [--redis redis://127.0.0.1:6379/13] [--database-url postgres://…/mcpgov_bench_dbconn] [--baseline]

`--baseline` runs the same load once more without the pool (persistent connections,
DATABASE_CONN_MAX_AGE=60, as before): on a shared PostgreSQL server that can take most of its
`max_connections`, so it is off by default.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from killswitch_propagation import fresh_database, start_portal  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/mcpgov_bench_dbconn"


def conninfo(url: str) -> str:
    parts = urlsplit(url)
    info = (
        f"host={parts.hostname or '127.0.0.1'} port={parts.port or 5432} user={parts.username or 'postgres'}"
    )
    if parts.password:
        info += f" password={parts.password}"
    return info + f" dbname={parts.path.lstrip('/')}"


def run_once(args, env: dict[str, str], target_args: tuple, label: str, pool_total: int | None) -> bool:
    from tests.portal.db_load import ConnectionSampler, LoadTarget, drive

    proc, base_url = start_portal(env, args.workers)
    try:
        time.sleep(1.0)  # every worker has imported the project
        target = LoadTarget(base_url, *target_args)
        database = urlsplit(args.database_url).path.lstrip("/")
        sampler = ConnectionSampler(conninfo(args.database_url), database)
        sampler.start()
        started = time.monotonic()
        result = drive(target, clients=args.clients, seconds=args.seconds, max_requests=args.max_requests)
        elapsed = time.monotonic() - started
        peak = sampler.stop()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    kinds = ", ".join(
        f"{kind} {result.ok(kind)}" for kind in ("page", "ingest", "bundle_poll", "control_poll", "toggle")
    )
    statuses: dict[int, int] = {}
    for (_kind, status), n in result.answers.items():
        statuses[status] = statuses.get(status, 0) + n
    print(
        f"[{label}] {args.clients} clients for {elapsed:.1f} s, {sum(statuses.values())} answers "
        f"({kinds} succeeded); statuses {dict(sorted(statuses.items()))}"
    )
    limit = f" (pool {args.pool} x {args.workers} workers = {pool_total})" if pool_total else ""
    print(
        f"[{label}] peak PostgreSQL connections of the portal: {peak}{limit}; "
        f"5xx answers: {result.server_errors}; transport errors: {len(result.errors)} "
        f"({sampler.samples} samples of pg_stat_activity)"
    )
    if pool_total is None:
        return True
    met = peak <= pool_total and result.server_errors == 0 and not result.errors
    print(f"goal peak <= {pool_total} and 0 errors: {'met' if met else 'NOT met'}")
    return met


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--max-requests", type=int, default=500, help="per client")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pool", type=int, default=10, help="DATABASE_POOL_MAX_SIZE per worker")
    ap.add_argument("--redis", default="", help="REDIS_URL for the portal (the change between workers)")
    ap.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    ap.add_argument("--baseline", action="store_true", help="also run without the pool (see above)")
    args = ap.parse_args()

    from tests.portal.db_load import PORTAL_APP_NAME

    fresh_database(args.database_url)
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "1",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CELERY_BROKER_URL": "",
        "REDIS_URL": args.redis,
        "DJANGO_LOG_LEVEL": "WARNING",
        "PGAPPNAME": PORTAL_APP_NAME,
        "DATABASE_POOL": "1",
        "DATABASE_POOL_MAX_SIZE": str(args.pool),
        "DATABASE_POOL_TIMEOUT": "20",
    }
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "DJANGO_DEBUG")})
    os.environ["REDIS_URL"] = args.redis
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.db import connections

    from tests.e2e.portal_world import build_world
    from tests.portal.db_load import prepare

    world = build_world("bench")
    environment = world.env("development")
    token, sessions, cookies = prepare(
        world.team, world.admin, world.flag, environment, sessions=args.clients
    )
    connections.close_all()
    target_args = (cookies, token, sessions, world.flag.pk, environment.pk)

    with connections["default"].cursor() as cursor:
        cursor.execute("SHOW max_connections")
        max_connections = cursor.fetchone()[0]
    connections.close_all()
    print(
        f"PostgreSQL max_connections {max_connections}; portal: uvicorn --workers {args.workers}, "
        f"DATABASE_POOL_MAX_SIZE={args.pool}" + (f", REDIS_URL={args.redis}" if args.redis else "")
    )
    met = run_once(args, env, target_args, "pool", args.pool * args.workers)
    if args.baseline:
        unpooled = {**env, "DATABASE_POOL": "0", "DATABASE_CONN_MAX_AGE": "60"}
        run_once(args, unpooled, target_args, "no pool, CONN_MAX_AGE=60", None)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
