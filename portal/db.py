"""Database access from async code that waits (long polls, streams): no connection held while waiting.

A long poll may wait 30 s and a stream for hours; a database connection checked out for that
time is one the pool cannot give to a page view or an ingestion. `db_call` runs one piece of
ORM work in a thread (thread-sensitive, as Django wants it) and gives the connection back —
to the pool on PostgreSQL (`docs/deploy.md`) — as soon as the work is done.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection


def release_connection() -> None:
    """Give this thread's connection back (to the pool), unless a transaction is open here
    (the test client runs the view in the test's thread, inside the test's transaction)."""
    if not connection.in_atomic_block:
        connection.close()


def _run(fn, args, kwargs):
    if not connection.in_atomic_block:
        close_old_connections()  # as at request start: drop a broken or expired connection
    try:
        return fn(*args, **kwargs)
    finally:
        release_connection()


async def db_call(fn, /, *args, **kwargs):
    """`fn(*args, **kwargs)` in Django's thread for this context, holding a connection only meanwhile."""
    return await sync_to_async(_run, thread_sensitive=True)(fn, args, kwargs)


async def db_call_pooled(fn, /, *args, **kwargs):
    """`fn(*args, **kwargs)` in a thread of the event loop's pool, holding a connection only meanwhile.

    For work a route in front of Django runs per request (the audit batch route): outside a
    Django request, `db_call`'s thread-sensitive mode is one thread per process, so every
    request of the process would queue behind the one before it, commit wait included; here
    they run side by side as they do under Django's handler (a thread each). The ORM keeps
    one connection per thread, and `_run` hands it back to the pool when the call ends."""
    return await sync_to_async(_run, thread_sensitive=False)(fn, args, kwargs)
