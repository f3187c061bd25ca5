"""Database-level append-only protection for the audit tables (per database vendor).

PostgreSQL: BEFORE UPDATE / DELETE row triggers and a BEFORE TRUNCATE statement trigger that
raise an exception. SQLite: BEFORE UPDATE / DELETE triggers with RAISE(ABORT) (SQLite has no
TRUNCATE; a DELETE without WHERE fires the row triggers). Installed by migration 0002.
"""

from __future__ import annotations

APPEND_ONLY_TABLES = ("audit_auditevent", "audit_auditdigest")
# The signing-key history (governance migration 0003) is protected the same way.
KEY_HISTORY_TABLES = ("governance_signingkeyevent",)
PROTECTED_TABLES = APPEND_ONLY_TABLES + KEY_HISTORY_TABLES

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING HINT = 'Audit events and digests are never changed; see docs/audit.md.';
END
$$;
"""


def trigger_names(table: str) -> list[str]:
    return [f"{table}_no_update", f"{table}_no_delete", f"{table}_no_truncate"]


def install_sql(vendor: str, tables: tuple[str, ...] = APPEND_ONLY_TABLES) -> list[str]:
    statements: list[str] = []
    if vendor == "postgresql":
        statements.append(_PG_FUNCTION)
        for table in tables:
            statements += [
                f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()",
                f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()",
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()",
            ]
    elif vendor == "sqlite":
        for table in tables:
            for op in ("UPDATE", "DELETE"):
                statements.append(
                    f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'audit table {table} is append-only: {op} refused'); END"
                )
    else:  # pragma: no cover - the product supports PostgreSQL and SQLite only
        raise NotImplementedError(f"No append-only triggers for database vendor {vendor!r}.")
    return statements


def uninstall_sql(vendor: str, tables: tuple[str, ...] = APPEND_ONLY_TABLES) -> list[str]:
    statements: list[str] = []
    for table in tables:
        if vendor == "postgresql":
            statements += [f"DROP TRIGGER IF EXISTS {name} ON {table}" for name in trigger_names(table)]
        else:
            statements += [f"DROP TRIGGER IF EXISTS {name}" for name in trigger_names(table)[:2]]
    if vendor == "postgresql" and tables == APPEND_ONLY_TABLES:  # the function is shared; audit owns it
        statements.append("DROP FUNCTION IF EXISTS audit_refuse_change()")
    return statements


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
