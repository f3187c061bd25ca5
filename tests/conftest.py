"""Shared fixtures: teams with a member per role, a live portal process, and a browser."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from portal.choices import TeamRole
from tests.factories import PASSWORD, make_member, make_team

# Playwright's sync API runs an event loop in the test thread; the ORM calls tests make
# around it are still synchronous.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


def pytest_addoption(parser):
    parser.addoption(
        "--serial-only",
        action="store_true",
        help="run only the tests marked serial (make test's second pass)",
    )
    parser.addoption(
        "--record-file-seconds",
        action="store_true",
        help=f"write each file's measured seconds into {FILE_SECONDS.relative_to(ROOT)} (the order's input)",
    )


def pytest_collection_modifyitems(config, items):
    """`serial` tests run in a process of their own: deselected in xdist workers and kept alone by
    --serial-only (make test runs both passes; a plain `pytest` runs everything in one)."""
    if config.getoption("--serial-only"):
        keep = [i for i in items if i.get_closest_marker("serial")]
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        keep = [i for i in items if not i.get_closest_marker("serial")]
    else:
        return
    dropped = [i for i in items if i not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items[:] = heaviest_files_first(items)


# What a file costs: its seconds (setup + call + teardown of its tests) measured in a full run and
# kept in FILE_SECONDS (`pytest -n 3 --dist loadfile --record-file-seconds` rewrites the entries of
# the files it ran). A file not in it yet is estimated by its markers: a browser test drives
# Chromium against a live portal, a slow one starts servers or processes, the rest take a fraction
# of a second. Markers alone put the one-test crawls and fuzzing runs (80-140 s each) behind files
# of many quick tests, so they started mid-run and the run ended on them (the schemathesis files,
# 140 s each, ran last). The committed copy is from a full run at load 1-9 (3,375 worker-seconds,
# 1,169 s on 3 workers: the tail past an even share was ~45 s).
FILE_SECONDS = ROOT / "tests" / "file_seconds.json"
TEST_WEIGHT = {"browser": 30, "slow": 10}


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]  # xdist's loadfile scope


def heaviest_files_first(items: list) -> list:
    """The collection reordered file by file, heaviest first, each file's tests in their own order.

    With `--dist loadfile --no-loadscope-reorder` (make test) xdist hands the files out in this
    order, so the long ones (a browser crawl, a schemathesis run) start early and the many quick
    files fill the workers at the end; xdist's own reordering, by the number of tests in a file,
    started the one-test crawls last. Every worker computes the same order (xdist checks)."""
    measured = json.loads(FILE_SECONDS.read_text()) if FILE_SECONDS.exists() else {}
    estimate: collections.Counter[str] = collections.Counter()
    for item in items:
        estimate[_file_of(item.nodeid)] += next(
            (w for m, w in TEST_WEIGHT.items() if item.get_closest_marker(m)), 1
        )
    weight = {name: measured.get(name, guess) for name, guess in estimate.items()}
    # stable: a file's tests keep their order; equal weights keep the collection's order
    return sorted(items, key=lambda item: -weight[_file_of(item.nodeid)])


_recorded: collections.Counter[str] | None = None  # --record-file-seconds: each file's seconds so far


def pytest_configure(config):
    global _recorded
    if config.getoption("--record-file-seconds") and not hasattr(config, "workerinput"):
        _recorded = collections.Counter()


def pytest_runtest_logreport(report):
    """The controller (or a run without xdist) sums the phases of each file's tests."""
    if _recorded is not None:
        _recorded[_file_of(report.nodeid)] += report.duration


def pytest_unconfigure(config):
    if _recorded is None:  # only the controller (or a run without xdist) records
        return
    seconds = json.loads(FILE_SECONDS.read_text()) if FILE_SECONDS.exists() else {}
    seconds.update({name: round(total, 1) for name, total in _recorded.items()})
    FILE_SECONDS.write_text(json.dumps(dict(sorted(seconds.items())), indent=1) + "\n")


# --- one migrated test database, cloned for each xdist worker (PostgreSQL) -----------------------
# Running the migrations takes minutes on a loaded 2-core machine, and every xdist worker used to
# run all of them into its own test database at the same time. Instead the controller migrates one
# test database before it starts the workers, each worker clones it (CREATE DATABASE … TEMPLATE,
# a file copy inside PostgreSQL) as its own, and the controller drops the template at the end.
# The template lives for one pytest run only: migrations import product code (the audit trigger
# SQL, the key-history hash), so a template kept between runs could be stale. A plain `pytest`
# without -n, and SQLite, create and migrate their database as pytest-django always does.
#
# make test's serial pass (--serial-only, no xdist) would migrate a database of its own again; with
# MCPGOV_TEST_TEMPLATE_KEEP=1 in both passes (the Makefile sets it) the controller leaves its
# template (test_<name>, never connected to by the workers, so still freshly migrated) and the
# serial pass, whose test database has that very name, keeps (reuses) it and drops it at its end.
TEMPLATE_DB_ENV = "MCPGOV_TEST_TEMPLATE_DB"
TEMPLATE_KEEP_ENV = "MCPGOV_TEST_TEMPLATE_KEEP"
_template_db = pytest.StashKey[str]()


def _xdist_controller(config) -> bool:
    return config.pluginmanager.hasplugin("dsession") and not hasattr(config, "workerinput")


def _unblocked_db(config):
    from pytest_django.plugin import blocking_manager_key

    return config.stash[blocking_manager_key].unblock()


def pytest_sessionstart(session):
    """The controller's half: migrate the template (before xdist starts the workers: its own
    pytest_sessionstart runs last) and name it in the environment the workers inherit."""
    config = session.config
    if not _xdist_controller(config) or config.option.collectonly:
        return
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    original = connection.settings_dict["NAME"]
    with _unblocked_db(config):
        name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        connection.close()
        connection.close_pool()  # CREATE DATABASE … TEMPLATE refuses while anything is connected
    config.stash[_template_db] = original
    os.environ[TEMPLATE_DB_ENV] = name


def _serial_pass_reuses_template(config) -> bool:
    return bool(config.getoption("--serial-only") and os.environ.get(TEMPLATE_KEEP_ENV))


def pytest_sessionfinish(session):
    config = session.config
    if _template_db not in config.stash:
        return
    from django.db import connection

    if not os.environ.get(TEMPLATE_KEEP_ENV):  # else the serial pass uses it and drops it
        with _unblocked_db(config):
            connection.creation.destroy_test_db(config.stash[_template_db], verbosity=0)
    os.environ.pop(TEMPLATE_DB_ENV, None)


def _postgres_admin(settings_dict):
    """An autocommit connection to the server's maintenance database, as the test database's user."""
    import psycopg

    return psycopg.connect(
        dbname="postgres",
        user=settings_dict.get("USER") or "postgres",
        password=settings_dict.get("PASSWORD") or None,
        host=settings_dict.get("HOST") or "127.0.0.1",
        port=settings_dict.get("PORT") or 5432,
        autocommit=True,
    )


@pytest.fixture(scope="session")
def django_db_keepdb(request):
    """A worker keeps (does not re-create and re-migrate) the clone it made of the template;
    otherwise pytest-django's --reuse-db as usual."""
    if os.environ.get(TEMPLATE_DB_ENV) and hasattr(request.config, "workerinput"):
        return True
    if _serial_pass_reuses_template(request.config):
        return True
    return request.config.getvalue("reuse_db")


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, django_db_keepdb, request):
    """The worker's half: its test database (test_…_gwN, named by pytest-django) is a fresh clone of
    the controller's template, dropped again when the worker's session ends. The serial pass that
    reuses the template (TEMPLATE_KEEP_ENV) drops it when its session ends."""
    from django.db import connection, connections
    from psycopg import sql

    template = os.environ.get(TEMPLATE_DB_ENV)
    target = None  # the database this session drops at its end
    if template and hasattr(request.config, "workerinput"):
        target = connection.settings_dict["TEST"]["NAME"]
        with _postgres_admin(connection.settings_dict) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(target)))
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(target), sql.Identifier(template)
                )
            )
    elif _serial_pass_reuses_template(request.config) and connection.vendor == "postgresql":
        target = connection.creation._get_test_db_name()  # the name pytest-django (keepdb) reuses
    yield
    if target is None:
        return
    for conn in connections.all():
        conn.close()
        if hasattr(conn, "close_pool"):
            conn.close_pool()
    with _postgres_admin(connection.settings_dict) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target)))


@pytest.fixture
def team(db):
    return make_team("acme", "Acme")


@pytest.fixture
def other_team(db):
    return make_team("globex", "Globex")


@pytest.fixture
def admin(team):
    return make_member(team, TeamRole.ADMIN)


@pytest.fixture
def reviewer(team):
    return make_member(team, TeamRole.REVIEWER)


@pytest.fixture
def requester(team):
    return make_member(team, TeamRole.REQUESTER)


@pytest.fixture
def viewer(team):
    return make_member(team, TeamRole.VIEWER)


@pytest.fixture
def outsider(other_team):
    """An admin of another team: must never see the first team's objects."""
    return make_member(other_team, TeamRole.ADMIN, username="globex-admin")


@pytest.fixture
def password():
    return PASSWORD


def redis_test_url() -> str:
    """This test process's own Redis database: REDIS_TEST_URL's number minus the xdist worker index
    (gw0 → 15, gw1 → 14, …), so parallel workers never share queues, keys or realtime channels."""
    base = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    head, _, db = base.rpartition("/")
    return f"{head}/{(int(db or 0) - index) % 16}"


@contextlib.contextmanager
def celery_worker(settings, log: Path, *, queue: str | None = None, env: dict[str, str] | None = None):
    """`celery -A config worker` in a subprocess on this test process's Redis database and the test
    database (needs transactional_db), with this process's Celery app pointed at the same broker and
    eager mode off; yields the broker URL. `queue`: a queue of the worker's own, else Celery's default.

    The app's connection and producer pools are dropped on the way in and out: pools made for an
    earlier broker URL would otherwise keep sending there.
    """
    from config.celery import app

    broker = redis_test_url()
    name = queue or f"worker-{os.getpid()}"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool",
                "solo",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                *(["-Q", queue] if queue else []),
                "-n",
                f"{name}@%h",
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "DATABASE_URL": _database_url(),
                "CELERY_BROKER_URL": broker,
                "REDIS_URL": "",
                "DJANGO_DEBUG": "1",
                **(env or {}),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def reset_pools() -> None:
        app.close()
        app.amqp._producer_pool = None

    saved = (app.conf.task_always_eager, app.conf.broker_url)
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_BROKER_URL = broker
    settings.REDIS_URL = ""
    app.conf.task_always_eager, app.conf.broker_url = False, broker
    reset_pools()
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None and "ready." not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None and "ready." in log.read_text(), log.read_text()[-3000:]
        yield broker
    finally:
        app.conf.task_always_eager, app.conf.broker_url = saved
        reset_pools()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def rebuilds_queued_not_run(settings):
    """Bundle rebuilds are queued (on this process's Redis database, a queue of its own) and no worker
    runs them: what a toggle delivers before the debounced rebuild, with no rebuild at all."""
    import redis

    from config.celery import app

    broker, queue = redis_test_url(), f"no-worker-{os.getpid()}"
    saved = (app.conf.task_always_eager, app.conf.broker_url, app.conf.task_default_queue)
    saved_settings = (settings.CELERY_TASK_ALWAYS_EAGER, settings.CELERY_BROKER_URL)
    settings.CELERY_TASK_ALWAYS_EAGER, settings.CELERY_BROKER_URL = False, broker
    app.conf.task_always_eager, app.conf.broker_url, app.conf.task_default_queue = False, broker, queue
    app.close()
    app.amqp._producer_pool = None
    try:
        yield
    finally:
        app.conf.task_always_eager, app.conf.broker_url, app.conf.task_default_queue = saved
        settings.CELERY_TASK_ALWAYS_EAGER, settings.CELERY_BROKER_URL = saved_settings
        app.close()
        app.amqp._producer_pool = None
        r = redis.Redis.from_url(broker)
        r.delete(queue, *r.keys("mcpgov:bundle-rebuild:*"))  # the debounce markers of this database


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_url() -> str:
    from django.conf import settings
    from django.db import connection

    db = settings.DATABASES["default"]
    if "sqlite" in db["ENGINE"]:
        return f"sqlite:///{connection.settings_dict['NAME']}"
    user = db.get("USER") or "postgres"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{connection.settings_dict['NAME']}"


@contextlib.contextmanager
def run_portal(
    port: int | None = None,
    env: dict[str, str] | None = None,
    *,
    database_url: str | None = None,
    uvicorn_args: tuple[str, ...] = (),
):
    """The portal served by uvicorn (a production ASGI server) in a subprocess, on the test database.

    Yields the base URL; `env` adds settings (e.g. single sign-on's OIDC_*); `database_url`
    connects it otherwise (e.g. as another database role); `uvicorn_args` e.g. ("--workers", "2").
    Needs transactional_db.
    """
    port = port or free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url or _database_url(),
        "DJANGO_DEBUG": "1",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CELERY_BROKER_URL": "",
        **(env or {}),
    }
    proc = spawn(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            *uvicorn_args,
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(proc, port, "portal", timeout=90)  # a loaded machine imports slowly
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def spawn(cmd: list[str], **kwargs) -> subprocess.Popen:
    """A server process whose stderr goes to a temporary file, never to a pipe nobody reads:
    a pipe fills after 64 KiB of log lines (every 4xx a portal logs) and then blocks the server
    mid-request. `stderr_tail(proc)` reads it back for an assertion message."""
    log = tempfile.TemporaryFile(prefix="mcpgov-test-stderr-")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, **kwargs)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def stderr_tail(proc: subprocess.Popen, limit: int = 2000) -> str:
    log = getattr(proc, "log", None)
    if log is None:
        return proc.stderr.read().decode()[-limit:] if proc.stderr else ""
    log.seek(0)
    return log.read().decode(errors="replace")[-limit:]


def wait_for_port(proc: subprocess.Popen, port: int, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {stderr_tail(proc)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{name} did not start within {timeout:.0f} s")


@pytest.fixture
def portal_server(transactional_db):
    """The portal served by uvicorn in a subprocess (run_portal). Data written by the test must be committed."""
    with run_portal() as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright (Playwright's own browser download is not used).

    Module-scoped: Playwright's sync API keeps an event loop running in this thread while it is
    open, which would break every later test that calls anyio.run / asyncio.run.
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (make deps does).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)  # a loaded machine: a fresh portal's first pages can take > 10 s
    yield page
    context.close()


def login(page, base_url: str, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{base_url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")
