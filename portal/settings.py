"""Settings for the MCP governance portal, read from the environment (twelve-factor).

With nothing set, the portal runs in development mode on a local SQLite file with
Celery tasks executed eagerly, so `make run` needs no services. Production sets
DJANGO_DEBUG=0, DJANGO_SECRET_KEY, DATABASE_URL, CELERY_BROKER_URL and
MCPGOV_KEY_ENCRYPTION_KEY; `manage.py check --deploy` is then clean.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", True)

_DEV_SECRET = "dev-insecure-secret-key-change-me-in-production-0123456789abcdef"  # noqa: S105
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", _DEV_SECRET if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "axes",
    "csp",
    "portal",
    "governance",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "portal.middleware.StaticFilesMiddleware",  # WhiteNoise, async-capable (long polls hold no thread)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "portal.middleware.CurrentTeamMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes requires
]

ROOT_URLCONF = "portal.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.team",
            ],
        },
    },
]

WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

# Database: DATABASE_URL (postgres://…) selects PostgreSQL through psycopg 3;
# unset, a local SQLite file so the product runs with zero setup.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout let the dev server, a worker and long polls share the file.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file (not memory) so tests that run the portal in a subprocess see the test data.
    (BASE_DIR / "var").mkdir(exist_ok=True)
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / "test.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    # First: refuses every authenticate() for a locked-out username+IP before a password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user object; anonymous means no access

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Login throttling (django-axes) ------------------------------------------------
# After MCPGOV_LOGIN_FAILURE_LIMIT wrong passwords for one username from one address, that pair is
# refused (even with the right password) for MCPGOV_LOGIN_COOLOFF_MINUTES, or until a site admin runs
# `manage.py axes_reset_username USERNAME`. A success resets the count. Every authenticate() goes
# through the backend above: the login page, the Django admin, and any future API basic auth.
AXES_FAILURE_LIMIT = int(os.environ.get("MCPGOV_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("MCPGOV_LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "portal.views.login_locked_out"
AXES_VERBOSE = False

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Development serves static files straight from the finders (no collectstatic needed).
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Django REST framework -------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "portal.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "MCP Governance Portal API",
    "DESCRIPTION": "Policy administration, signed policy bundles and audit ingestion for MCP enforcement clients.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc served from this portal (drf-spectacular-sidecar), not from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Session states appear as `state` and `from_state`: one enum in the schema.
    "ENUM_NAME_OVERRIDES": {"SessionStateEnum": "audit.choices.SessionState"},
}

# --- Celery ------------------------------------------------------------------
# With no broker configured, tasks run eagerly in-process (zero-setup mode).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "") or None
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE

# Gateways not seen for this many minutes are flagged on the kill-switch panel; reviewers are emailed once.
MCPGOV_STALE_CLIENT_MINUTES = int(os.environ.get("MCPGOV_STALE_CLIENT_MINUTES", "10"))
# How long a team invitation link stays valid (single use, stored hashed).
MCPGOV_INVITATION_DAYS = int(os.environ.get("MCPGOV_INVITATION_DAYS", "7"))
# Base URL for links in notification emails (e.g. https://governance.example.com); empty: no links.
MCPGOV_PORTAL_URL = os.environ.get("MCPGOV_PORTAL_URL", "")

# Celery beat: the whole periodic schedule, in one place (`celery -A portal beat`; docs/operations.md).
# Every task is safe to run twice.
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    # Re-issue bundles past half their lifetime (gateways never fail closed while the portal is up)
    # and drop ended grants.
    "governance-refresh-bundles": {"task": "governance.tasks.refresh_bundles", "schedule": 15.0},
    # Unreviewed production-access requests and ended grants become expired; bundles rebuilt; people told.
    "governance-expire-access": {"task": "governance.tasks.expire_access_requests", "schedule": 60.0},
    # Gateways that went quiet: flagged in the UI, reviewers emailed once.
    "governance-stale-clients": {"task": "governance.tasks.notify_stale_clients", "schedule": 60.0},
    # Seal the audit hash chains into signed digests.
    "audit-seal-chains": {"task": "audit.seal_audit_chains", "schedule": 300.0},
    # Scheduled exports: each finished day written once per team (checked hourly).
    "audit-export-logs": {"task": "audit.export_audit_logs", "schedule": 3600.0},
}

# Redis for the real-time push channel (flags, bundle versions) across web processes.
REDIS_URL = os.environ.get("REDIS_URL", "")

# --- Product settings --------------------------------------------------------
# Key-encryption key for signing keys at rest (Fernet, urlsafe base64 32 bytes).
MCPGOV_KEY_ENCRYPTION_KEY = os.environ.get("MCPGOV_KEY_ENCRYPTION_KEY", "")
if not MCPGOV_KEY_ENCRYPTION_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("MCPGOV_KEY_ENCRYPTION_KEY must be set when DJANGO_DEBUG is off.")
    MCPGOV_KEY_ENCRYPTION_KEY = "ZGV2LW9ubHkta2V5LWVuY3J5cHRpb24ta2V5LTAwMDA="  # dev only
MCPGOV_AUDIT_EXPORT_DIR = Path(os.environ.get("MCPGOV_AUDIT_EXPORT_DIR", BASE_DIR / "var" / "exports"))

# --- Email -------------------------------------------------------------------
EMAIL_BACKEND = os.environ.get(
    "DJANGO_EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "mcp-governance@localhost")

# --- Security (strict when DEBUG is off) --------------------------------------
# A client's X-Forwarded-Proto is trusted only when the operator says a proxy sets it (and strips
# the client's own): DJANGO_TRUST_X_FORWARDED_PROTO=1, or DJANGO_SECURE_PROXY_SSL_HEADER=
# "HTTP_X_FORWARDED_PROTO,https" for another header.
_proxy_header = env_list("DJANGO_SECURE_PROXY_SSL_HEADER")
if len(_proxy_header) == 2:
    SECURE_PROXY_SSL_HEADER = (_proxy_header[0], _proxy_header[1])
elif _proxy_header:
    raise ImproperlyConfigured('DJANGO_SECURE_PROXY_SSL_HEADER must be "HEADER,value".')
elif env_bool("DJANGO_TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Content-Security-Policy (django-csp 4): only this origin's scripts, styles and images; no inline
# script or style anywhere (behaviour lives in static/js/portal.js, styles in static/css/portal.css).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
