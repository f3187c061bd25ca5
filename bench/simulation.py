"""Draft simulation throughput: recorded calls/s replayed under the live and the draft bundle.

Creates a fresh database (default `mcpgov_bench_sim`), migrates it, sets up a team whose role may
use a read/write server, records N calls (INTENT + RESULT each, 200 calls per session) straight into
the audit tables (bulk insert: the ingestion path has its own benchmark, bench/ingest.py; the
simulation reads only server, tool, arguments, timestamps and result bytes, not the hash chain),
then drafts one change (the binding becomes read_only) and times `draft_simulate` over the window.

    .venv/bin/python bench/simulation.py [--calls 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
GOAL_SECONDS = 5.0
PER_SESSION = 200


def fresh_database(name: str) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    return f"{base}/{name}".replace("postgresql://", "postgres://", 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--database", default="mcpgov_bench_sim")
    args = parser.parse_args()

    os.environ["DATABASE_URL"] = fresh_database(args.database)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from audit.models import AgentSession, AuditEvent
    from audit.services.simulation import draft_simulate
    from governance.choices import RuleKind
    from governance.models import Environment
    from governance.services import drafts
    from governance.services import environments as env_services
    from governance.services import roles as role_services
    from governance.services import servers as server_services
    from governance.services.bundles import team_bundles_rebuild
    from governance.services.teams import team_bootstrap, team_policy_settings_set
    from portal.choices import TeamRole
    from tests.factories import make_member

    team = team_bootstrap(slug="bench", name="Bench")
    admin = make_member(team, TeamRole.ADMIN, username="bench-admin")
    dev = Environment.objects.get(team=team, name="development")
    git = server_services.server_create(team=team, slug="git", command="python")
    server_services.server_tools_record(
        server=git,
        tools=[
            {"name": "log", "annotations": {"readOnlyHint": True}},
            {"name": "write_file", "annotations": {"readOnlyHint": False}},
        ],
    )
    env_services.binding_set(environment=dev, server=git, target="/srv", permission="read_write")
    role = role_services.role_create(team=team, name="code_agent")
    role_services.role_server_add(role=role, server=git, kind=RuleKind.ALLOWED)
    team_bundles_rebuild(team_id=team.pk)
    team_policy_settings_set(team=team, policy_edits_immediate=False)

    t0 = datetime.now(UTC) - timedelta(days=1)
    started = time.perf_counter()
    sessions = (args.calls + PER_SESSION - 1) // PER_SESSION
    made = 0
    for s in range(sessions):
        session = AgentSession.objects.create(
            id=uuid.uuid4(), team=team, environment=dev, role="code_agent", read_only=False, started_at=t0
        )
        rows = []
        for n in range(min(PER_SESSION, args.calls - made)):
            ts = t0 + timedelta(seconds=s * 10 + n * 0.01)
            tool = "write_file" if n % 10 == 9 else "log"
            common = {
                "session": session,
                "call_id": f"c{n}",
                "ts": ts,
                "server": "git",
                "tool": tool,
                "arguments": {"path": f"/srv/f{n % 7}.txt"},
                "prev_hash": "0" * 64,
                "hash": "0" * 64,
                "received_at": ts,
            }
            rows.append(AuditEvent(seq=2 * n + 1, phase="intent", **common))
            rows.append(AuditEvent(seq=2 * n + 2, phase="result", status="success", bytes=200, **common))
            made += 1
        AuditEvent.objects.bulk_create(rows, batch_size=2000)
    print(f"recorded {made} calls in {sessions} sessions ({time.perf_counter() - started:.1f} s to insert)")

    with contextlib.suppress(drafts.DraftChangeRecorded):  # kept in the draft, as intended
        env_services.binding_set(environment=dev, server=git, permission="read_only", actor=admin)
    draft = drafts.draft_open(team=team)
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        report = draft_simulate(draft=draft, since=t0 - timedelta(hours=1), until=datetime.now(UTC))
        runs.append(time.perf_counter() - start)
    best = min(runs)
    env = next(e for e in report.environments if e.environment == "development")
    print(
        f"simulated {report.calls} calls: best {best:.2f} s of {len(runs)} runs = {report.calls / best:,.0f} calls/s "
        f"(goal: {args.calls} calls in under {GOAL_SECONDS:.0f} s); newly refused {env.newly_refused_count}, "
        f"sessions that would halt {len(env.halted_sessions)}"
    )
    return 0 if report.calls >= args.calls else 1


if __name__ == "__main__":
    sys.exit(main())
