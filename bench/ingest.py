"""Audit ingestion throughput: events/s into PostgreSQL through the real API under uvicorn.

Creates a fresh database (default `mcpgov_bench`), migrates it, registers a team and an
enforcement client, starts the portal under uvicorn (production settings, several workers),
then N concurrent gateways each POST batches of 500 events (alternating INTENT/RESULT, small
argument and result payloads) to their own session for the measured duration. Prints the
sustained events/s and checks at the end that every accepted event is stored exactly once,
with contiguous sequences, and (with --verify) that every hash chain recomputes.

The same run first measures a baseline checkout (`--baseline-ref`, default the main commit before
the issue-#12 ingestion rework, extracted with `git archive` into a temporary directory and served
from there) on the same bodies and a fresh database, then this checkout; `--rounds 2` alternates
them twice. CPU is counted from the end of the warm-up (the first request in a worker imports the
URLconf, the `mcp` SDK among it, which is not ingestion): the uvicorn workers' user+sys time and,
separately, that of the PostgreSQL backends serving them.

    .venv/bin/python bench/ingest.py [--seconds 20] [--gateways 6] [--workers 2] [--batch 500] [--verify]

`--profile` instead runs one worker's per-request work (`audit.api.events_route._ingest`: token
lookup, parsing, validation, the transaction) in this process on the same bodies, first timed with
a CPU clock, then under cProfile with a CPU clock, and prints where the CPU goes: what a loaded
machine's wall-clock figures cannot show.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
GOAL = 20_000  # events/s, issue #12
BASELINE_REF = "f8cbe33"  # main before the issue-#12 ingestion rework (bench/ingest.py --baseline-ref)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_database(name: str, template: str | None = None) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    base = PG_ADMIN.rsplit("/", 1)[0]
    return f"{base}/{name}".replace("postgresql://", "postgres://", 1)


def make_batches(session_id: str, count: int, size: int) -> list[bytes]:
    """`count` request bodies of `size` events each, seq 1.. contiguous."""
    t0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    bodies = []
    seq = 0
    for _ in range(count):
        events = []
        for _ in range(size):
            seq += 1
            call = (seq + 1) // 2
            ts = (t0 + timedelta(microseconds=seq * 1500)).isoformat().replace("+00:00", "Z")
            ev = {
                "seq": seq,
                "call_id": f"{session_id[:8]}-{call}",
                "phase": "intent" if seq % 2 else "result",
                "ts": ts,
                "server": "github_api",
                "tool": "create_pr",
                "arguments": {"title": f"feat: change {call}", "base": "main", "head": f"feature/{call}"},
                "args_summary": f'title="feat: change {call}", base=main',
                "status": None,
                "result_summary": "",
                "bytes": None,
                "duration_ms": None,
                "trigger": None,
                "bundle_version": 7,
                "result": None,
            }
            if seq % 2 == 0:
                ev.update(
                    status="success" if call % 50 else "fail",
                    result_summary=f"PR#{call} created",
                    bytes=412,
                    duration_ms=341.7,
                    result={"number": call, "state": "open"},
                )
            events.append(ev)
        bodies.append(json.dumps({"events": events}, separators=(",", ":")).encode())
    return bodies


class Gateway(threading.Thread):
    def __init__(self, port: int, token: str, session_id: str, bodies: list[bytes], stop_at: list[float]):
        super().__init__(daemon=True)
        self.port, self.token, self.session_id, self.bodies, self.stop_at = (
            port,
            token,
            session_id,
            bodies,
            stop_at,
        )
        self.accepted = 0
        self.batches: list[tuple[float, int]] = []  # (finish time, accepted)
        self.error: str | None = None

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        path = f"/api/v1/gateway/sessions/{self.session_id}/events/"
        try:
            for body in self.bodies:
                if time.monotonic() >= self.stop_at[0]:
                    break
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                data = response.read()
                if response.status != 200:
                    self.error = f"HTTP {response.status}: {data[:300]!r}"
                    return
                accepted = json.loads(data)["accepted"]
                self.accepted += accepted
                self.batches.append((time.monotonic(), accepted))
        except Exception as exc:  # reported in the summary
            self.error = repr(exc)
        finally:
            conn.close()


def pg_backend_pids(database: str) -> list[int]:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [database]
        ).fetchall()
    return [r[0] for r in rows]


def pids_cpu(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def checkout(ref: str) -> Path:
    """`ref` of this repository as a plain directory (git archive), to serve the baseline from."""
    target = Path(tempfile.mkdtemp(prefix="ingest-baseline-"))
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def post_empty(port: int, token: str, session_id: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(
            "POST",
            f"/api/v1/gateway/sessions/{session_id}/events/",
            b'{"events": []}',
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        conn.getresponse().read()
    finally:
        conn.close()


def bench_team(sessions: list) -> tuple:
    """The bench team, its enforcement client (issued, with its token) and one open session per id."""
    from audit.models import AgentSession
    from governance.services.clients import client_create
    from governance.services.teams import team_bootstrap

    team = team_bootstrap(slug="bench", name="Bench")
    environment = team.environments.get(name="development")
    issued = client_create(team=team, environment=environment, name="bench-gw")
    for i, sid in enumerate(sessions):
        AgentSession.objects.create(
            id=sid,
            team=team,
            environment=environment,
            client=issued.client,
            role="code_agent",
            agent=f"bench-{i}",
            started_at=datetime.now(UTC),
        )
    return team, issued


def run_once(label: str, root: Path, args, sessions: list[str], bodies: dict[str, list[bytes]]) -> dict:
    """One measured run: fresh database, the portal of `root` under uvicorn, the gateways posting."""
    from django.db import connection

    connection.close()
    url = fresh_database(args.database, template=f"{args.database}_migrated")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "bench-" + uuid.uuid4().hex * 2,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "CELERY_BROKER_URL": "",
        "MCPGOV_KEY_ENCRYPTION_KEY": "YmVuY2gtb25seS1rZXktZW5jcnlwdGlvbi1rZXktMDA=",
        "DATABASE_CONN_MAX_AGE": "600",
        "DJANGO_LOG_LEVEL": "WARNING",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "MCPGOV_KEY_ENCRYPTION_KEY")})
    from audit.models import AgentSession, AuditEvent

    team, issued = bench_team(sessions)
    connection.close()

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=root,
        env=env,
    )
    from killswitch_propagation import cpu_seconds

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("uvicorn did not start") from None
                time.sleep(0.1)
        # Warm every worker up: its first request imports the URLconf (seconds on a loaded machine).
        for _ in range(3):
            warm = [
                threading.Thread(target=post_empty, args=(port, issued.token, sid))
                for sid in sessions * max(1, 8 // len(sessions))
            ]
            for t in warm:
                t.start()
            for t in warm:
                t.join()
        print(
            f"[{label}] uvicorn with {args.workers} workers on :{port} serving {root}; {args.gateways} gateways "
            f"posting for {args.warmup:g}+{args.seconds:g} s…",
            flush=True,
        )
        start = time.monotonic()
        stop_at = [start + args.warmup + args.seconds]
        gateways = [Gateway(port, issued.token, sid, bodies[sid], stop_at) for sid in sessions]
        for g in gateways:
            g.start()
        time.sleep(args.warmup)
        measured_from = time.monotonic()
        load_before = os.getloadavg()[0]
        pg_pids = pg_backend_pids(args.database)
        cpu0, pg0 = cpu_seconds(server.pid), pids_cpu(pg_pids)
        for g in gateways:
            g.join()
        end = time.monotonic()
        portal_cpu, pg_cpu = cpu_seconds(server.pid) - cpu0, pids_cpu(pg_pids) - pg0
        load_after = os.getloadavg()[0]
    finally:
        server.terminate()
        server.wait(timeout=30)

    errors = [g.error for g in gateways if g.error]
    total = sum(g.accepted for g in gateways)
    in_window = sum(n for g in gateways for t, n in g.batches if t > measured_from)
    window = end - measured_from
    rate = in_window / window if window > 0 else 0.0
    stored = AuditEvent.objects.filter(session__team=team).count()
    per_session_ok = all(
        AuditEvent.objects.filter(session_id=g.session_id).count()
        == g.accepted
        == (AgentSession.objects.get(pk=g.session_id).last_seq)
        for g in gateways
    )
    cpu_us = portal_cpu / in_window * 1e6 if in_window else float("nan")
    pg_us = pg_cpu / in_window * 1e6 if in_window else float("nan")
    print(f"[{label}] batches of {args.batch}: {total:,} events accepted in {end - start:.1f} s")
    print(f"[{label}] sustained (after {args.warmup:g} s warm-up): {rate:,.0f} events/s")
    print(
        f"[{label}] count check: {stored:,} stored vs {total:,} accepted; per-session counts and chain heads "
        f"{'match' if per_session_ok else 'DO NOT match'}"
    )
    print(
        f"[{label}] CPU per ingested event after warm-up: portal (uvicorn workers) {cpu_us:.1f} µs, "
        f"PostgreSQL backends {pg_us:.1f} µs ({in_window:,} events); load average "
        f"{load_before:.2f} → {load_after:.2f} on {os.cpu_count()} CPUs"
    )
    ok = not errors and stored == total and per_session_ok and total > 0
    problems: list = []
    if args.verify:
        from audit.services.digests import audit_verify

        t0 = time.monotonic()
        checked, _, problems = audit_verify(team=team)
        print(
            f"[{label}] verify: {checked} chains recomputed in {time.monotonic() - t0:.1f} s, "
            f"{len(problems)} problem(s)"
        )
        ok = ok and not problems
    for error in errors:
        print(f"[{label}] gateway error: {error}")
    return {
        "ok": ok,
        "rate": rate,
        "cpu_us": cpu_us,
        "pg_us": pg_us,
        "lost": total - stored,
        "load": (load_before, load_after),
    }


def profile_in_process(args, count: int = 40) -> int:
    """CPU per event of the batch route's work in this process, then its cProfile (CPU clock)."""
    import cProfile
    import pstats

    from django.db import connection

    from audit.api.events_route import _ingest

    connection.close()
    fresh_database(args.database, template=f"{args.database}_migrated")
    sids = [uuid.uuid4(), uuid.uuid4()]
    _team, issued = bench_team(sids)
    timed, profiled = (make_batches(str(sid), count + 5, args.batch) for sid in sids)
    for sid, bodies in ((sids[0], timed[:5]), (sids[1], profiled[:5])):  # warm-up
        for body in bodies:
            assert _ingest(issued.token, sid, body) is not None
    load_before = os.getloadavg()
    cpu0 = time.process_time()
    for body in timed[5:]:
        assert _ingest(issued.token, sids[0], body) is not None
    cpu = time.process_time() - cpu0
    events = count * args.batch
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for body in profiled[5:]:
        assert _ingest(issued.token, sids[1], body) is not None
    profiler.disable()
    print(
        f"in process, batches of {args.batch}: {cpu / events * 1e6:.1f} µs CPU per event for the route's "
        f"work (token lookup, parse, validate, chain, COPY, commit; no HTTP); load average "
        f"{load_before[0]:.2f} → {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs. cProfile (CPU clock; "
        "its own overhead inflates small functions):"
    )
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="mcpgov_bench")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured duration")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds excluded from the rate and CPU")
    parser.add_argument("--gateways", type=int, default=6, help="concurrent gateways (one session each)")
    parser.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2), help="uvicorn workers")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--verify", action="store_true", help="recompute every hash chain afterwards")
    parser.add_argument(
        "--baseline-ref",
        default=BASELINE_REF,
        help="git ref served as the same-run baseline ('' to skip)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="baseline/this-checkout pairs, alternated")
    parser.add_argument("--profile", action="store_true", help="only profile one worker's work in process")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("MCPGOV_KEY_ENCRYPTION_KEY", "YmVuY2gtb25seS1rZXktZW5jcnlwdGlvbi1rZXktMDA=")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-" + uuid.uuid4().hex * 2)
    # Migrated once (minutes on a loaded machine), then copied for each run (CREATE DATABASE … TEMPLATE).
    migrated = fresh_database(f"{args.database}_migrated")
    print(f"database {args.database}_migrated: migrating…", flush=True)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": migrated},
        check=True,
    )
    os.environ["DATABASE_URL"] = fresh_database(args.database, template=f"{args.database}_migrated")
    if args.profile:  # the worker's settings, as run_once gives them to uvicorn
        os.environ.update(
            DJANGO_DEBUG="0",
            DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
            DJANGO_SECURE_SSL_REDIRECT="0",
            CELERY_BROKER_URL="",
            DJANGO_LOG_LEVEL="WARNING",
        )
    import django

    django.setup()
    if args.profile:
        return profile_in_process(args)

    sessions = [str(uuid.uuid4()) for _ in range(args.gateways)]
    # Enough bodies for a fast machine; a gateway stops at the deadline. The same bodies serve every run.
    per_gateway = int((args.seconds + args.warmup) * 40_000 / args.gateways / args.batch) + 2
    print(
        f"preparing {per_gateway} batches of {args.batch} events for each of {args.gateways} gateways…",
        flush=True,
    )
    bodies = {sid: make_batches(sid, per_gateway, args.batch) for sid in sessions}

    baseline_root = checkout(args.baseline_ref) if args.baseline_ref else None
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    try:
        for _ in range(args.rounds):
            if baseline_root:
                runs["baseline"].append(
                    run_once(f"baseline {args.baseline_ref}", baseline_root, args, sessions, bodies)
                )
            runs["this"].append(run_once("this checkout", ROOT, args, sessions, bodies))
    finally:
        if baseline_root:
            shutil.rmtree(baseline_root, ignore_errors=True)

    def best(label: str, key: str, pick=max):
        values = [r[key] for r in runs[label]]
        return pick(values) if values else None

    ok = all(r["ok"] for rs in runs.values() for r in rs)
    lost = sum(r["lost"] for r in runs["this"])
    loads = [x for rs in runs.values() for r in rs for x in r["load"]]
    load = f"{min(loads):.1f} → {max(loads):.1f}"
    cpu, rate, pg = best("this", "cpu_us", min), best("this", "rate"), best("this", "pg_us", min)
    base_cpu, base_rate = best("baseline", "cpu_us", min), best("baseline", "rate")
    cpu_ratio = cpu / base_cpu if base_cpu else None
    rate_ratio = rate / base_rate if base_rate else None
    print(
        f"\nthis checkout: {cpu:.1f} µs portal CPU per event (PostgreSQL {pg:.1f} µs), {rate:,.0f} events/s"
        + (
            f"; baseline {args.baseline_ref}: {base_cpu:.1f} µs, {base_rate:,.0f} events/s "
            f"(CPU ratio {cpu_ratio:.2f}, rate ratio {rate_ratio:.2f})"
            if base_cpu
            else ""
        )
        + f"; load average {load} on {os.cpu_count()} CPUs"
    )
    summaries = [
        {
            "figure": "ingestion: portal CPU per event",
            "value": round(cpu, 1),
            "unit": "µs",
            "baseline": f"main {args.baseline_ref} {base_cpu:.1f} µs" if base_cpu else None,
            "ratio": round(cpu_ratio, 2) if cpu_ratio else None,
            "goal": "≤ half of main",
            "met": cpu_ratio <= 0.5 if cpu_ratio else None,
            "load": load,
        },
        {
            "figure": "ingestion: sustained events/s into PostgreSQL",
            "value": round(rate),
            "unit": "events/s",
            "baseline": f"main {args.baseline_ref} {base_rate:,.0f}/s" if base_rate else None,
            "ratio": round(rate_ratio, 2) if rate_ratio else None,
            "goal": f"≥ {GOAL:,} events/s",
            "met": rate >= GOAL,
            "load": load,
        },
        {
            "figure": "ingestion: events lost",
            "value": lost,
            "unit": "events",
            "baseline": None,
            "ratio": None,
            "goal": "0" + (" (chains verified)" if args.verify else ""),
            "met": lost == 0 and ok,
            "load": load,
        },
    ]
    for summary in summaries:
        print("SUMMARY " + json.dumps(summary, ensure_ascii=False))
    print("RESULT:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
