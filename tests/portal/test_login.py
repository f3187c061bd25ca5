"""Login throttling (django-axes): a username+address pair is locked after repeated failures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from tests.factories import PASSWORD, UserFactory

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


def log_in(client, password, username="alice", **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


def test_thirty_wrong_passwords_lock_the_account_and_the_right_one_is_refused(client, alice, settings):
    answers = [log_in(client, f"wrong-{i}").status_code for i in range(30)]
    limit = settings.AXES_FAILURE_LIMIT
    assert answers[: limit - 1] == [200] * (limit - 1)  # the login page again, "didn't match"
    assert set(answers[limit:]) == {429}
    locked = log_in(client, PASSWORD)
    assert locked.status_code == 429
    assert "Too many failed logins for alice" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    # another address is not locked out for this user
    assert log_in(client, PASSWORD, REMOTE_ADDR="10.9.8.7").status_code == 302


def test_the_unlock_command_lets_the_right_password_in(client, alice):
    for i in range(10):
        log_in(client, f"wrong-{i}")
    assert log_in(client, PASSWORD).status_code == 429
    from django.core.management import call_command

    call_command("axes_reset_username", "alice")
    assert log_in(client, PASSWORD).status_code == 302


def test_the_lock_ends_after_the_cool_off(client, alice, settings):
    from datetime import timedelta

    from axes.models import AccessAttempt
    from django.utils import timezone

    for i in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, f"wrong-{i}")
    assert log_in(client, PASSWORD).status_code == 429
    # as if the cool-off had passed since the last failure
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    assert log_in(client, PASSWORD).status_code == 302


def test_a_success_resets_the_count(client, alice, settings):
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        log_in(client, f"wrong-{i}")
    assert log_in(client, PASSWORD).status_code == 302
    client.logout()
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        log_in(client, f"wrong-again-{i}")
    assert log_in(client, PASSWORD).status_code == 302


def test_the_django_admin_login_is_throttled_too(client, db):
    UserFactory(username="root", is_superuser=True, is_staff=True)
    for i in range(10):
        client.post(reverse("admin:login"), {"username": "root", "password": f"wrong-{i}"})
    response = client.post(reverse("admin:login"), {"username": "root", "password": PASSWORD})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_limit_and_cool_off_come_from_the_environment():
    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); django.setup();"
        "from django.conf import settings as s; print(s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME.total_seconds())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "MCPGOV_LOGIN_FAILURE_LIMIT": "7", "MCPGOV_LOGIN_COOLOFF_MINUTES": "2"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["7", "120.0"]
