"""Database-level append-only protection for the audit tables (per database vendor).

PostgreSQL: BEFORE UPDATE / DELETE row triggers and a BEFORE TRUNCATE statement trigger that
raise an exception. SQLite: BEFORE UPDATE / DELETE triggers with RAISE(ABORT) (SQLite has no
TRUNCATE; a DELETE without WHERE fires the row triggers). Installed by migration 0002 with the
SQL of portal/append_only.py; this module knows which tables are protected and the app role.
"""

from __future__ import annotations

from portal.append_only import install_sql, trigger_names, uninstall_sql

APPEND_ONLY_TABLES = ("audit_auditevent", "audit_auditdigest")
# The signing-key history (governance migration 0003) is protected the same way.
KEY_HISTORY_TABLES = ("governance_signingkeyevent",)
PROTECTED_TABLES = APPEND_ONLY_TABLES + KEY_HISTORY_TABLES


def suspend_sql(vendor: str) -> tuple[list[str], list[str]]:
    """(before, after) statements that lift the protection for one transaction and restore it.

    Used only by `manage.py flush` (a deliberate wipe of the whole database, which Django's
    test framework also runs between transactional tests). Both halves run inside the flush's
    transaction, so no other connection ever sees the tables unprotected.
    """
    if vendor == "postgresql":
        before = [f"ALTER TABLE {t} DISABLE TRIGGER {n}" for t in PROTECTED_TABLES for n in trigger_names(t)]
        after = [f"ALTER TABLE {t} ENABLE TRIGGER {n}" for t in PROTECTED_TABLES for n in trigger_names(t)]
        return before, after
    creates = [s for s in install_sql(vendor, PROTECTED_TABLES) if s.startswith("CREATE TRIGGER")]
    drops = [s for s in uninstall_sql(vendor, PROTECTED_TABLES) if s.startswith("DROP TRIGGER")]
    return drops, creates


def installed_triggers(connection) -> set[str]:
    """Names of the append-only triggers present in the database (none before the migrations that add them)."""
    names = [n for t in PROTECTED_TABLES for n in trigger_names(t)]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgname = ANY(%s)", [names]
            )
        else:
            placeholders = ", ".join(["%s"] * len(names))
            cursor.execute(
                f"SELECT name FROM sqlite_master WHERE type = 'trigger' AND name IN ({placeholders})",  # noqa: S608
                names,
            )
        return {row[0] for row in cursor.fetchall()}


def suspend_installed_sql(connection) -> tuple[list[str], list[str]]:
    """suspend_sql limited to the triggers that exist (a database migrated without 0002 has none)."""
    present = installed_triggers(connection)
    before, after = suspend_sql(connection.vendor)
    keep = lambda statement: any(f" {name}" in statement for name in present)  # noqa: E731
    return [s for s in before if keep(s)], [s for s in after if keep(s)]


# --- the application's database role (PostgreSQL) -------------------------------------------------

# Tables the application only ever INSERTs into and SELECTs from. The app role gets exactly those
# two privileges on them; the append-only triggers above additionally stop the owner's mistakes.
# AgentSession stays writable (counters, chain head, state, `sealed_seq`): verify_audit never
# trusts `sealed_seq` or the head for what a digest covers — it reads the digests (and their
# external copies) themselves, so resetting those columns hides nothing (docs/audit.md).
INSERT_ONLY_TABLES = (
    *APPEND_ONLY_TABLES,
    *KEY_HISTORY_TABLES,
    "audit_acknowledgement",
    "audit_sessiondecision",
    "audit_sessionstatechange",
    "audit_auditdigestcopy",
)
# Tables the app may read but never write: migrations belong to the owner role.
READ_ONLY_TABLES = ("django_migrations",)


class RoleError(Exception):
    """The app role cannot be set up safely (it is the owner, a superuser, or owns tables)."""


def app_role_setup(connection, *, role: str, create: bool = False, password: str | None = None) -> list[str]:
    """Create (optionally) and grant the application's role on `connection`'s database, idempotently.

    Run as the owner of the tables (the role migrations run as). Every table in the current schema
    is reset to: SELECT, INSERT, UPDATE, DELETE — except INSERT_ONLY_TABLES (SELECT, INSERT) and
    READ_ONLY_TABLES (SELECT). The role owns nothing, so it cannot ALTER the audit tables (disable
    their triggers), replace or drop the trigger function, or create objects in the schema.
    Returns the statements run (for the command's --verbosity 2).
    """
    from psycopg import sql

    if connection.vendor != "postgresql":
        return []
    ident = sql.Identifier(role)
    ran: list[str] = []

    def run(cursor, statement, params=None):
        text = (
            statement.as_string(connection.connection) if isinstance(statement, sql.Composable) else statement
        )
        cursor.execute(text, params)
        ran.append(text if "PASSWORD" not in text else text.split(" PASSWORD")[0] + " PASSWORD ***")

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user, current_database(), current_schema()")
        owner, database, schema = cursor.fetchone()
        if role == owner:
            raise RoleError(
                f"The app role {role!r} is the role this command connects as: run it (and migrate) "
                "as the owner role (DATABASE_OWNER_URL, --database owner)."
            )
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [role])
        row = cursor.fetchone()
        if row is None and not create:
            raise RoleError(f"No role {role!r}: create it, or pass --create-role.")
        if row is not None and row[0]:
            raise RoleError(f"The app role {role!r} is a superuser: it could lift every protection.")
        if row is None:
            run(cursor, sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        run(
            cursor,
            sql.SQL(
                "ALTER ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
            ).format(ident),
        )
        if password:
            run(cursor, sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(password)))
        cursor.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", [role, owner])
        if cursor.fetchone()[0]:
            raise RoleError(f"The app role {role!r} is a member of the owner role {owner!r}.")
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = %s) AND n.nspname = %s",
            [role, schema],
        )
        owned = [r[0] for r in cursor.fetchall()]
        if owned:
            raise RoleError(
                f"The app role {role!r} owns {', '.join(sorted(owned)[:5])}…: migrations ran as the app "
                "role. Reassign them (REASSIGN OWNED BY app TO owner) and migrate as the owner."
            )
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", [schema])
        tables = [r[0] for r in cursor.fetchall()]
        schema_ident = sql.Identifier(schema)
        run(cursor, sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), ident))
        run(cursor, sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema_ident, ident))
        run(cursor, sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC, {}").format(schema_ident, ident))
        run(cursor, sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(schema_ident, ident))
        for table in tables:
            if table in INSERT_ONLY_TABLES:
                privileges = "SELECT, INSERT"
            elif table in READ_ONLY_TABLES:
                privileges = "SELECT"
            else:
                privileges = "SELECT, INSERT, UPDATE, DELETE"
            run(
                cursor,
                sql.SQL("GRANT " + privileges + " ON {} TO {}").format(sql.Identifier(schema, table), ident),
            )
        run(cursor, sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(schema_ident, ident))
        run(
            cursor,
            sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(schema_ident, ident),
        )
    return ran
