"""Append-only tables enforced by the database: the trigger SQL, per vendor (PostgreSQL, SQLite).

Any app's migration protects its tables with it (audit's events and digests, governance's
signing-key history); audit/db.py knows which tables are protected and how to suspend them.
"""

from __future__ import annotations

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


def install_sql(vendor: str, tables: tuple[str, ...]) -> list[str]:
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


def uninstall_sql(vendor: str, tables: tuple[str, ...], *, drop_function: bool = False) -> list[str]:
    """Drop the tables' triggers; `drop_function` also drops the shared function (the audit app owns it)."""
    statements: list[str] = []
    for table in tables:
        if vendor == "postgresql":
            statements += [f"DROP TRIGGER IF EXISTS {name} ON {table}" for name in trigger_names(table)]
        else:
            statements += [f"DROP TRIGGER IF EXISTS {name}" for name in trigger_names(table)[:2]]
    if vendor == "postgresql" and drop_function:
        statements.append("DROP FUNCTION IF EXISTS audit_refuse_change()")
    return statements
