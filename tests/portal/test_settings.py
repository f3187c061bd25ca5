"""Settings come from the environment: safe development defaults, strict production checks."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROD_ENV = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "x7Yq0v3LrN9mB2kP5tW8zC1dF4gH6jK0lM3nQ5rS7uV9wX2yZ4aB6cD8eF0gH2iJ",
    "MCPGOV_KEY_ENCRYPTION_KEY": "ZGV2LW9ubHkta2V5LWVuY3J5cHRpb24ta2V5LTAwMDA=",
    "DJANGO_ALLOWED_HOSTS": "governance.example.com",
    "DATABASE_URL": "postgres://mcpgov@db.example.com:5432/mcpgov",
    "CELERY_BROKER_URL": "redis://redis.example.com:6379/0",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "MCPGOV_"))
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_settings_pass_the_deploy_check():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PROD_ENV)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    env = {k: v for k, v in PROD_ENV.items() if k != "DJANGO_SECRET_KEY"}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_production_refuses_to_start_without_a_key_encryption_key():
    env = {k: v for k, v in PROD_ENV.items() if k != "MCPGOV_KEY_ENCRYPTION_KEY"}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "MCPGOV_KEY_ENCRYPTION_KEY must be set" in result.stderr


def test_zero_setup_defaults_use_sqlite_and_eager_celery():
    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); django.setup();"
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_TASK_ALWAYS_EAGER, s.DEBUG)"
    )
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "MCPGOV_"))
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["django.db.backends.sqlite3", "True", "True"]


def test_database_url_selects_postgresql_through_psycopg3():
    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); django.setup();"
        "from django.conf import settings as s; d = s.DATABASES['default'];"
        "print(d['ENGINE'], d['HOST'], d['NAME'], s.CELERY_TASK_ALWAYS_EAGER, s.CELERY_BROKER_URL)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **PROD_ENV, "DJANGO_DEBUG": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == [
        "django.db.backends.postgresql",
        "db.example.com",
        "mcpgov",
        "False",
        "redis://redis.example.com:6379/0",
    ]


def _database_settings(env: dict[str, str]) -> dict:
    import json

    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        "d = settings.DATABASES['default']; "
        "print(json.dumps({'max_age': d['CONN_MAX_AGE'], 'pool': d.get('OPTIONS', {}).get('pool')}))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_"))}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_postgresql_uses_a_bounded_pool_and_no_persistent_connections():
    url = {"DATABASE_URL": "postgres://mcpgov@db.example.com:5432/mcpgov"}
    assert _database_settings(url) == {"max_age": 0, "pool": {"min_size": 1, "max_size": 10, "timeout": 10.0}}
    sized = {
        **url,
        "DATABASE_POOL_MAX_SIZE": "4",
        "DATABASE_POOL_MIN_SIZE": "0",
        "DATABASE_POOL_TIMEOUT": "3",
    }
    assert _database_settings(sized)["pool"] == {"min_size": 0, "max_size": 4, "timeout": 3.0}
    # pgbouncer in front: no pool here, connections as configured
    assert _database_settings({**url, "DATABASE_POOL": "0", "DATABASE_CONN_MAX_AGE": "0"}) == {
        "max_age": 0,
        "pool": None,
    }
