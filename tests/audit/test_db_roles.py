"""The application's database role cannot lift the audit protection; the portal works as that role.

Two real PostgreSQL roles: the test database's owner (the superuser pytest-django creates it as,
standing in for the owner role migrations run as) and an app role made by `manage.py
audit_grants --create-role`, which the portal subprocess connects as.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit.models import AgentSession, AuditDigest, AuditEvent
from tests.audit.conftest import STARTED_AT_TEXT, events, issue_client
from tests.conftest import run_portal

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="database roles exist on PostgreSQL only"),
]

REPLACE_FUNCTION = (
    "CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql "
    "AS $$ BEGIN RETURN NEW; END $$"
)


def _dsn(user: str) -> str:
    s = connection.settings_dict
    return f"postgresql://{user}@{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


@pytest.fixture
def app_role(db):
    role = f"{connection.settings_dict['NAME']}_app"[:63]
    yield role
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role])
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        if cursor.fetchone():
            cursor.execute(f'DROP OWNED BY "{role}"')
            cursor.execute(f'DROP ROLE "{role}"')


def call(base: str, token: str, method: str, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(  # noqa: S310 - our own test server
        base + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode()}


def grants(*args) -> str:
    out = io.StringIO()
    call_command("audit_grants", *args, stdout=out)
    return out.getvalue()


def refused_as(conn, statement: str) -> str:
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
        conn.execute(statement)
    return str(info.value)


def test_app_role_cannot_lift_the_protection_and_the_portal_ingests_as_it(team, app_role):
    environment = team.environments.get(name="development")
    issued = issue_client(team, environment, "gw-dev")
    assert "SELECT/INSERT only on audit_auditevent, audit_auditdigest" in grants(
        "--role", app_role, "--create-role"
    )
    grants("--role", app_role)  # idempotent: a second run (after the next migrate) converges

    # The portal, connected as the app role: a gateway opens a session, ships events, ends it.
    with run_portal(database_url=_dsn(app_role)) as base:
        sid = "6a0c7f33-3f2e-4b59-9b0e-7d2b1a4c5d6e"
        status, body = call(
            base,
            issued.token,
            "POST",
            "/api/v1/gateway/sessions/",
            {"id": sid, "role": "code_agent", "started_at": STARTED_AT_TEXT},
        )
        assert status == 201, body
        status, body = call(
            base, issued.token, "POST", f"/api/v1/gateway/sessions/{sid}/events/", {"events": events(1, 6)}
        )
        assert status == 200 and body["accepted"] == 6, body
        status, body = call(
            base, issued.token, "PATCH", f"/api/v1/gateway/sessions/{sid}/", {"state": "ended"}
        )
        assert status == 200, body

    assert AuditEvent.objects.filter(session_id=sid).count() == 6
    digest = AuditDigest.objects.get(team=team)  # sealed by the app role when the session ended
    assert digest.heads == [{"session": sid, "seq": 6, "hash": AgentSession.objects.get(pk=sid).last_hash}]
    before = list(
        AuditEvent.objects.filter(session_id=sid).order_by("seq").values_list("seq", "tool", "hash")
    )

    with psycopg.connect(_dsn(app_role), autocommit=True) as app:
        assert app.execute("SELECT current_user").fetchone()[0] == app_role
        assert app.execute("SELECT count(*) FROM audit_auditevent").fetchone()[0] == 6
        for table in ("audit_auditevent", "audit_auditdigest", "governance_signingkeyevent"):
            assert f"must be owner of table {table}" in refused_as(
                app, f"ALTER TABLE {table} DISABLE TRIGGER ALL"
            )
            assert f"must be owner of table {table}" in refused_as(
                app, f"ALTER TABLE {table} DISABLE TRIGGER {table}_no_update"
            )
            assert "must be owner" in refused_as(app, f"DROP TRIGGER {table}_no_delete ON {table}")
            assert "must be owner" in refused_as(app, f'ALTER TABLE {table} OWNER TO "{app_role}"')
            assert f"permission denied for table {table}" in refused_as(app, f"UPDATE {table} SET id = id")  # noqa: S608
            assert f"permission denied for table {table}" in refused_as(app, f"DELETE FROM {table}")  # noqa: S608
            assert f"permission denied for table {table}" in refused_as(app, f"TRUNCATE {table} CASCADE")
        # Refused twice over: the app may not create in the schema, nor replace what it does not own.
        assert refused_as(app, REPLACE_FUNCTION) in (
            "permission denied for schema public",
            "must be owner of function audit_refuse_change",
        )
        assert "must be owner of function audit_refuse_change" in refused_as(
            app, "DROP FUNCTION audit_refuse_change() CASCADE"
        )
        assert "permission denied for schema public" in refused_as(
            app, "CREATE FUNCTION audit_refuse_nothing() RETURNS int LANGUAGE sql AS 'SELECT 1'"
        )
        for table in ("audit_acknowledgement", "audit_sessiondecision", "audit_auditdigestcopy"):
            assert "permission denied" in refused_as(app, f"DELETE FROM {table}")  # noqa: S608
        assert "permission denied" in refused_as(app, "DELETE FROM django_migrations")
        # What the app does need still works: it keeps the session row (counters, chain head).
        app.execute("UPDATE audit_agentsession SET agent = agent")

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'audit_%%_no_%%' AND tgenabled = 'O'"
        )
        assert cursor.fetchone()[0] == 6
        cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = 'audit_refuse_change'")
        assert "is append-only" in cursor.fetchone()[0]
    after = list(AuditEvent.objects.filter(session_id=sid).order_by("seq").values_list("seq", "tool", "hash"))
    assert after == before
    out = io.StringIO()
    call_command("verify_audit", stdout=out)
    assert "all intact" in out.getvalue()


def test_grants_refuse_an_unsafe_app_role(app_role):
    with pytest.raises(CommandError, match="is the role this command connects as"):
        grants("--role", connection.settings_dict.get("USER") or "postgres")
    with pytest.raises(CommandError, match="create it, or pass --create-role"):
        grants("--role", app_role)
    with pytest.raises(CommandError, match="is a superuser"):
        grants("--role", "postgres" if connection.settings_dict.get("USER") != "postgres" else "root")
