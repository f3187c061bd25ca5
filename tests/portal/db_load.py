"""Concurrent portal load and a sampler of its PostgreSQL connections.

Shared by tests/portal/test_db_pool.py and bench/db_connections.py. The portal processes run
with `PGAPPNAME=<app name>` (libpq's variable), so the sampler counts exactly their connections
in `pg_stat_activity`, not the test's or its own. The load is a mix of what holds connections in
production: signed-in page views, audit ingestion, bundle long polls, session-control long polls
and kill-switch toggles (each toggle publishes a bundle and wakes the long polls); bounded in
requests per client and in time, on loopback only.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import requests

PORTAL_APP_NAME = "mcpgov-portal-load"
KINDS = ("page", "ingest", "bundle_poll", "control_poll", "toggle")


@dataclass
class LoadTarget:
    base_url: str
    cookies: dict[str, str]  # a signed-in admin's session (page views, toggles)
    token: str  # an enforcement client of `environment_id`
    sessions: list[str]  # agent sessions of that client, one per ingesting/polling client
    flag_pk: int
    environment_id: int


@dataclass
class LoadResult:
    answers: Counter = field(default_factory=Counter)  # (kind, status) -> count
    errors: list[str] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(n for (_kind, status), n in self.answers.items() if status >= 500)

    def ok(self, kind: str) -> int:
        return sum(n for (k, status), n in self.answers.items() if k == kind and status < 400)


def prepare(team, admin, flag, environment, sessions: int) -> tuple[str, list[str], dict[str, str]]:
    """An enforcement client, `sessions` agent sessions and the admin's session cookie (ORM, in-process)."""
    from django.conf import settings
    from django.test import Client

    from audit.models import AgentSession
    from governance.services.clients import client_create

    issued = client_create(team=team, environment=environment, name=f"load-{uuid.uuid4().hex[:6]}")
    ids = []
    for i in range(sessions):
        session = AgentSession.objects.create(
            id=uuid.uuid4(),
            team=team,
            environment=environment,
            client=issued.client,
            role="code_agent",
            agent=f"load-{i}",
            started_at=datetime.now(UTC),
            state="halted",
            trigger="cascade_write_chain",
        )
        ids.append(str(session.pk))
    browser = Client()
    browser.force_login(admin)
    cookies = {settings.SESSION_COOKIE_NAME: browser.cookies[settings.SESSION_COOKIE_NAME].value}
    return issued.token, ids, cookies


def _events(session_id: str, first_seq: int, count: int) -> bytes:
    t0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    events = []
    for seq in range(first_seq, first_seq + count):
        call = (seq + 1) // 2
        result = seq % 2 == 0
        events.append(
            {
                "seq": seq,
                "call_id": f"{session_id[:8]}-{call}",
                "phase": "result" if result else "intent",
                "ts": (t0 + timedelta(milliseconds=seq)).isoformat().replace("+00:00", "Z"),
                "server": "github_api",
                "tool": "create_pr",
                "arguments": {"title": f"PR {call}"},
                "args_summary": f"title=PR {call}",
                "status": "success" if result else None,
                "result_summary": "ok" if result else "",
                "bytes": 12 if result else None,
                "duration_ms": 3.0 if result else None,
                "trigger": None,
                "bundle_version": 1,
                "result": None,
            }
        )
    return json.dumps({"events": events}).encode()


def _client(target: LoadTarget, kind: str, index: int, deadline: float, max_requests: int, result, lock):
    http = requests.Session()
    bearer = {"Authorization": f"Bearer {target.token}"}
    session_id = target.sessions[index % len(target.sessions)]
    seq, etag, disabled = 1, "", False

    def record(status: int) -> None:
        with lock:
            result.answers[(kind, status)] += 1

    for _ in range(max_requests):
        if time.monotonic() >= deadline:
            break
        try:
            if kind == "page":
                resp = http.get(f"{target.base_url}/governance/flags/", cookies=target.cookies, timeout=30)
            elif kind == "ingest":
                resp = http.post(
                    f"{target.base_url}/api/v1/gateway/sessions/{session_id}/events/",
                    data=_events(session_id, seq, 10),
                    headers={**bearer, "Content-Type": "application/json"},
                    timeout=30,
                )
                if resp.status_code == 200:
                    seq += 10
            elif kind == "bundle_poll":
                resp = http.get(
                    f"{target.base_url}/api/v1/bundle/?wait=2",
                    headers={**bearer, "If-None-Match": etag},
                    timeout=30,
                )
                etag = resp.headers.get("ETag", etag)
            elif kind == "control_poll":
                resp = http.get(
                    f"{target.base_url}/api/v1/gateway/sessions/{session_id}/control/?since=0&wait=2",
                    headers=bearer,
                    timeout=30,
                )
            else:  # toggle: the kill-switch panel's form, as an admin's click sends it
                path = f"/governance/flags/{target.flag_pk}/{target.environment_id}/"
                path += "enable/" if disabled else "disable/"
                if not http.cookies.get("csrftoken"):
                    http.get(f"{target.base_url}/governance/flags/", cookies=target.cookies, timeout=30)
                csrf = http.cookies.get("csrftoken", "")
                resp = http.post(
                    f"{target.base_url}{path}",
                    data={"reason": "load test", "csrfmiddlewaretoken": csrf},
                    cookies=target.cookies,
                    headers={"Referer": f"{target.base_url}{path}"},
                    allow_redirects=False,
                    timeout=30,
                )
                disabled = not disabled
                time.sleep(0.2)
            record(resp.status_code)
        except requests.RequestException as exc:
            with lock:
                result.errors.append(f"{kind}: {exc!r}")
            record(599)


def drive(target: LoadTarget, *, clients: int, seconds: float, max_requests: int = 400) -> LoadResult:
    """`clients` concurrent clients, the kinds in turn, until `seconds` pass or each made `max_requests`."""
    result, lock = LoadResult(), threading.Lock()
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(
            target=_client, args=(target, KINDS[i % len(KINDS)], i, deadline, max_requests, result, lock)
        )
        for i in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return result


class ConnectionSampler(threading.Thread):
    """Samples the portal's connections to `database` every `interval` s; `peak` is the most seen."""

    def __init__(self, conninfo: str, database: str, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.conninfo, self.database, self.interval = conninfo, database, interval
        self.peak = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.conninfo, autocommit=True, application_name="mcpgov-sampler") as conn:
            while not self._stop_event.is_set():
                (n,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                    (self.database, PORTAL_APP_NAME),
                ).fetchone()
                self.peak = max(self.peak, n)
                self.samples += 1
                self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join(10)
        return self.peak
