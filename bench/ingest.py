"""Audit ingestion throughput: events/s into PostgreSQL through the real API under uvicorn.

Creates a fresh database (default `mcpgov_bench`), migrates it, registers a team and an
enforcement client, starts the portal under uvicorn (production settings, several workers),
then N concurrent gateways each POST batches of 500 events (alternating INTENT/RESULT, small
argument and result payloads) to their own session for the measured duration. Prints the
sustained events/s and checks at the end that every accepted event is stored exactly once,
with contiguous sequences, and (with --verify) that every hash chain recomputes.

    .venv/bin/python bench/ingest.py [--seconds 20] [--gateways 6] [--workers 2] [--batch 500]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
GOAL = 20_000  # events/s, issue #12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_database(name: str) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="mcpgov_bench")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured duration")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds excluded from the rate")
    parser.add_argument("--gateways", type=int, default=6, help="concurrent gateways (one session each)")
    parser.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2), help="uvicorn workers")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--verify", action="store_true", help="recompute every hash chain afterwards")
    parser.add_argument(
        "--portal-root", default="", help="serve the portal from this checkout (e.g. main, to compare)"
    )
    args = parser.parse_args()

    url = fresh_database(args.database)
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

    from audit.models import AgentSession, AuditEvent
    from governance.services.clients import client_create
    from governance.services.teams import team_bootstrap

    team = team_bootstrap(slug="bench", name="Bench")
    environment = team.environments.get(name="development")
    issued = client_create(team=team, environment=environment, name="bench-gw")
    sessions = []
    for i in range(args.gateways):
        sid = str(uuid.uuid4())
        AgentSession.objects.create(
            id=sid,
            team=team,
            environment=environment,
            client=issued.client,
            role="code_agent",
            agent=f"bench-{i}",
            started_at=datetime.now(UTC),
        )
        sessions.append(sid)
    # Enough bodies for a fast machine; a gateway stops at the deadline.
    per_gateway = int((args.seconds + args.warmup) * 40_000 / args.gateways / args.batch) + 2
    print(
        f"preparing {per_gateway} batches of {args.batch} events for each of {args.gateways} gateways…",
        flush=True,
    )
    bodies = {sid: make_batches(sid, per_gateway, args.batch) for sid in sessions}
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
        cwd=ROOT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("uvicorn did not start") from None
                time.sleep(0.1)
        time.sleep(1.0)  # let every worker finish importing
        print(
            f"uvicorn with {args.workers} workers on :{port}; {args.gateways} gateways posting for "
            f"{args.warmup:g}+{args.seconds:g} s…",
            flush=True,
        )
        from killswitch_propagation import cpu_seconds

        cpu0 = cpu_seconds(server.pid)
        start = time.monotonic()
        stop_at = [start + args.warmup + args.seconds]
        gateways = [Gateway(port, issued.token, sid, bodies[sid], stop_at) for sid in sessions]
        for g in gateways:
            g.start()
        for g in gateways:
            g.join()
        end = time.monotonic()
        portal_cpu = cpu_seconds(server.pid) - cpu0
    finally:
        server.terminate()
        server.wait(timeout=20)

    errors = [g.error for g in gateways if g.error]
    total = sum(g.accepted for g in gateways)
    measured_from = start + args.warmup
    last_finish = max((t for g in gateways for t, _ in g.batches), default=end)
    in_window = sum(n for g in gateways for t, n in g.batches if t > measured_from)
    window = last_finish - measured_from
    rate = in_window / window if window > 0 else 0.0
    overall = total / (last_finish - start)

    stored = AuditEvent.objects.filter(session__team=team).count()
    per_session_ok = all(
        AuditEvent.objects.filter(session_id=g.session_id).count()
        == g.accepted
        == (AgentSession.objects.get(pk=g.session_id).last_seq)
        for g in gateways
    )
    print(f"batches of {args.batch}: {total:,} events accepted in {last_finish - start:.1f} s")
    print(
        f"sustained (after {args.warmup:g} s warm-up): {rate:,.0f} events/s   overall: {overall:,.0f} events/s   "
        f"goal {GOAL:,}/s: {'met' if rate >= GOAL else 'NOT met'}"
    )
    print(
        f"count check: {stored:,} stored vs {total:,} accepted; per-session counts and chain heads "
        f"{'match' if per_session_ok else 'DO NOT match'}"
    )
    if total:
        print(
            f"portal CPU (uvicorn workers, user+sys) per ingested event: {portal_cpu / total * 1e6:.1f} µs "
            f"({portal_cpu:.1f} s for {total:,} events; PostgreSQL's own CPU not included); "
            f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
        )
    ok = not errors and stored == total and per_session_ok and total > 0
    if args.verify:
        from audit.services.digests import audit_verify

        t0 = time.monotonic()
        checked, _, problems = audit_verify(team=team)
        print(
            f"verify: {checked} chains recomputed in {time.monotonic() - t0:.1f} s, {len(problems)} problem(s)"
        )
        ok = ok and not problems
    for error in errors:
        print(f"gateway error: {error}")
    print("RESULT:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
