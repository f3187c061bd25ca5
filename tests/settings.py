"""The product's settings (config/settings.py) for the test suite, with one difference: passwords
are hashed with MD5 first.

Django's default PBKDF2 hasher (1,200,000 iterations) takes seconds per password on a loaded
2-core machine, and the suite makes a few users in most tests and signs in through the login form
in the browser journeys. The suite's DJANGO_SETTINGS_MODULE (pyproject.toml) names this module,
and the portal, Celery and management-command processes the tests start inherit it through the
environment, so a password hashed in the test process verifies in the portal it starts. The
product's hashers (Django's defaults: config/settings.py sets none) stay in the list behind MD5, so a hash made by any of them still verifies.
Tests that check a setting as deployed run `config.settings` in a subprocess of their own.
"""

from django.conf import global_settings

from config.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *global_settings.PASSWORD_HASHERS]
