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
    "django_filters",
    "guardian",
    "axes",
    "csp",
    "oauth2_provider",
    "portal",
    "governance",
    "audit",
    "incidents",
]

MIDDLEWARE = [
    "portal.metrics.RequestMetricsMiddleware",  # outermost: every response counts (docs/operations.md, "Metrics")
    "django.middleware.security.SecurityMiddleware",
    "portal.middleware.StaticFilesMiddleware",  # WhiteNoise, async-capable (long polls hold no thread)
    "portal.middleware.RejectNulMiddleware",  # NUL in a URL or query: 400 before any database lookup
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "portal.middleware.CurrentTeamMiddleware",
    "portal.middleware.DeferredChangeMiddleware",  # a policy edit kept in a draft: to the draft page
    "axes.middleware.AxesMiddleware",  # last, as django-axes requires
]

ROOT_URLCONF = "config.urls"

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
                "config.context_processors.needs",
            ],
            # `{% when %}`, the one time format, on every page without a {% load %} to forget.
            "builtins": ["portal.templatetags.portal_tags"],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
elif env_bool("DATABASE_POOL", True):
    # PostgreSQL: psycopg 3's connection pool, one per process, so connections are bounded by
    # DATABASE_POOL_MAX_SIZE per worker whatever the load (docs/deploy.md has the arithmetic).
    # Under ASGI every request runs in a thread of its own; a persistent connection
    # (CONN_MAX_AGE > 0) would stay with each finished thread, so connections go back to the
    # pool at the end of every request instead (Django requires CONN_MAX_AGE = 0 with a pool).
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": int(os.environ.get("DATABASE_POOL_MIN_SIZE", "1")),
        "max_size": int(os.environ.get("DATABASE_POOL_MAX_SIZE", "10")),
        # seconds a request waits for a free connection before failing (PoolTimeout)
        "timeout": float(os.environ.get("DATABASE_POOL_TIMEOUT", "10")),
    }
# The owner role's connection (PostgreSQL): migrations, the audit trigger functions and the
# app role's grants run through it (`manage.py migrate --database owner`, then `manage.py
# audit_grants`); the portal itself connects as DATABASE_URL's role, which can only INSERT and
# SELECT audit rows (docs/deploy.md). Give it only to the one-shot migrate step, never to web
# or worker processes.
if os.environ.get("DATABASE_OWNER_URL"):
    DATABASES["owner"] = dj_database_url.parse(os.environ["DATABASE_OWNER_URL"], conn_max_age=0)
    DATABASES["owner"]["TEST"] = {"MIRROR": "default"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    # First: refuses every authenticate() for a locked-out username+IP before a password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user object; anonymous means no access
# guardian: a user's object permissions are read once per user object (two queries) and kept on it,
# instead of two queries for every check — a kill-switch toggle checks twice (view, service), a page
# once per action it shows.
# The user object lives for one request; portal.services evicts it when it changes that user's grants.
GUARDIAN_AUTO_PREFETCH = True

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
    # Bounded ?limit=/?offset= (400 outside them) and a JSON parser with a nesting-depth limit.
    "DEFAULT_PAGINATION_CLASS": "portal.api.Pagination",
    "DEFAULT_PARSER_CLASSES": [
        "portal.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "PAGE_SIZE": 100,
    # List filters are django-filter FilterSets (`filtersets.py` of each app), documented in OpenAPI.
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
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
    "ENUM_NAME_OVERRIDES": {
        "SessionStateEnum": "audit.choices.SessionState",
        "PolicyDraftStatusEnum": "governance.choices.DraftStatus",
        "ReviewStatusEnum": "audit.choices.ReviewStatus",
        "SuggestionStatusEnum": "audit.choices.SuggestionStatus",
    },
    # Error responses on every operation, and the bundle and control endpoints served outside DRF.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.schema.complete_schema",
    ],
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
# The gateway command the "client registered" page puts in its ready-to-paste .mcp.json and command
# line (`make run` sets the checkout's .venv/bin/mcpgov).
MCPGOV_GATEWAY_COMMAND = os.environ.get("MCPGOV_GATEWAY_COMMAND", "mcpgov")
# The Celery queue of team webhook deliveries (outbound HTTP that may wait on a slow receiver);
# empty: the default queue. A worker must consume it (`celery worker -Q celery,webhooks`).
MCPGOV_WEBHOOK_QUEUE = os.environ.get("MCPGOV_WEBHOOK_QUEUE", "")

# The portal is the OAuth 2.1 authorization server for agents (django-oauth-toolkit; docs/enforcer-api.md,
# "Agent identity"). Access tokens are EdDSA JWTs signed with the team's key; `iss` is MCPGOV_PORTAL_URL
# (or this request's origin when it is empty).
MCPGOV_AGENT_TOKEN_SECONDS = int(os.environ.get("MCPGOV_AGENT_TOKEN_SECONDS", "3600"))
OAUTH2_PROVIDER = {
    "PKCE_REQUIRED": True,
    # RFC 9700 (OAuth security BCP): S256 only, no implicit or password grant, tokens hashed at rest,
    # `iss` in the authorization response, refresh tokens rotated with reuse detection.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "SCOPES": {"mcp": "Call tools through the team's gateways"},
    "DEFAULT_SCOPES": ["mcp"],
    "ACCESS_TOKEN_EXPIRE_SECONDS": min(MCPGOV_AGENT_TOKEN_SECONDS, 3600),
    "ACCESS_TOKEN_GENERATOR": "governance.oauth.access_token_generator",
    "REFRESH_TOKEN_GENERATOR": "oauthlib.oauth2.rfc6749.tokens.random_token_generator",
    "OAUTH2_VALIDATOR_CLASS": "governance.oauth.AgentOAuth2Validator",
    # http only for RFC 8252 loopback redirects (native clients such as Claude Code): agent
    # registration refuses any other http URI (governance.services.agents.check_redirect_uris).
    "ALLOWED_REDIRECT_URI_SCHEMES": ["http", "https"],
    "OAUTH2_GRANT_TYPES_SUPPORTED": ["authorization_code", "client_credentials", "refresh_token"],
    "OAUTH2_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": ["client_secret_basic", "client_secret_post", "none"],
    "OIDC_ISS_ENDPOINT": MCPGOV_PORTAL_URL.rstrip("/"),
}
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"
# W008 ("http redirect URIs are allowed"): kept on purpose for RFC 8252 loopback redirects; the
# compensating rule (http only to 127.0.0.1 / ::1) is enforced where agents are registered.
SILENCED_SYSTEM_CHECKS = ["oauth2_provider.W008"]

# Audit sealing cadence (docs/audit.md): the beat interval, also the age at which ingestion and
# session reports seal opportunistically (so sealing works without beat, e.g. `make run`).
# Seconds between the realtime notifier's fallback polls while Redis delivers notifications.
MCPGOV_REALTIME_SAFETY_POLL = float(os.environ.get("MCPGOV_REALTIME_SAFETY_POLL", "2.0"))
MCPGOV_SEAL_INTERVAL_SECONDS = int(os.environ.get("MCPGOV_SEAL_INTERVAL_SECONDS", "60"))
# verify_audit reports events no digest covers once they are older than interval + grace.
MCPGOV_SEAL_GRACE_SECONDS = int(os.environ.get("MCPGOV_SEAL_GRACE_SECONDS", "300"))
# Write-once copies of every digest outside the database, comma-separated:
# dir:/var/lib/mcpgov/digests, syslog+tcp://host:6514, syslog+udp://host:514 (docs/audit.md).
MCPGOV_DIGEST_SINKS = env_list("MCPGOV_DIGEST_SINKS")
# SIEM sinks (per team, audit/services/streaming.py; docs/operations.md "Audit streaming"): beat
# interval, batch size, socket timeout, backoff (doubling from BACKOFF up to BACKOFF_MAX), and the
# networks a sink may reach besides public addresses (CIDRs; a SIEM on 10.0.0.0/8 needs listing).
MCPGOV_SINK_INTERVAL_SECONDS = float(os.environ.get("MCPGOV_SINK_INTERVAL_SECONDS", "5"))
MCPGOV_SINK_BATCH_SIZE = int(os.environ.get("MCPGOV_SINK_BATCH_SIZE", "500"))
MCPGOV_SINK_MAX_BATCHES_PER_RUN = int(os.environ.get("MCPGOV_SINK_MAX_BATCHES_PER_RUN", "20"))
MCPGOV_SINK_TIMEOUT_SECONDS = float(os.environ.get("MCPGOV_SINK_TIMEOUT_SECONDS", "10"))
MCPGOV_SINK_BACKOFF_SECONDS = float(os.environ.get("MCPGOV_SINK_BACKOFF_SECONDS", "2"))
MCPGOV_SINK_BACKOFF_MAX_SECONDS = float(os.environ.get("MCPGOV_SINK_BACKOFF_MAX_SECONDS", "60"))
MCPGOV_SINK_ALLOWED_NETWORKS = env_list("MCPGOV_SINK_ALLOWED_NETWORKS")

# A session whose gateway has not opened, reported, polled or shipped events for it for this long is
# ended by the portal ("ended: gateway stopped reporting"), checked every ..._STALE_CHECK_SECONDS.
MCPGOV_SESSION_STALE_MINUTES = int(os.environ.get("MCPGOV_SESSION_STALE_MINUTES", "15"))
MCPGOV_SESSION_STALE_CHECK_SECONDS = int(os.environ.get("MCPGOV_SESSION_STALE_CHECK_SECONDS", "60"))

# Celery beat: the whole periodic schedule, in one place (`celery -A config beat`; docs/operations.md).
# Every task is safe to run twice.
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    # Re-issue bundles past half their lifetime (gateways never fail closed while the portal is up)
    # and drop ended grants.
    "governance-refresh-bundles": {"task": "governance.tasks.refresh_bundles", "schedule": 15.0},
    # Signed flags updates superseded by a bundle go (the latest MCPGOV_FLAGS_UPDATES_KEEP per environment stay).
    "governance-prune-flags-updates": {"task": "governance.tasks.prune_flags_updates", "schedule": 600.0},
    # Unreviewed production-access requests and ended grants become expired; bundles rebuilt; people told.
    "governance-expire-access": {"task": "governance.tasks.expire_access_requests", "schedule": 60.0},
    # Gateways that went quiet: flagged in the UI, reviewers emailed once.
    "governance-stale-clients": {"task": "governance.tasks.notify_stale_clients", "schedule": 60.0},
    # Seal the audit hash chains into signed digests (and retry digest copies to the sinks).
    "audit-seal-chains": {"task": "audit.seal_audit_chains", "schedule": float(MCPGOV_SEAL_INTERVAL_SECONDS)},
    # SIEM sinks: each enabled sink past its backoff sends the events after its cursor.
    "audit-deliver-sinks": {"task": "audit.deliver_audit_sinks", "schedule": MCPGOV_SINK_INTERVAL_SECONDS},
    # Sessions whose gateway stopped reporting end; their open calls get outcome unknown.
    "audit-end-stale-sessions": {
        "task": "audit.end_stale_sessions",
        "schedule": float(MCPGOV_SESSION_STALE_CHECK_SECONDS),
    },
    # Scheduled exports: each finished day written once per team (checked hourly).
    "audit-export-logs": {"task": "audit.export_audit_logs", "schedule": 3600.0},
    # The quarterly allowlist review (Layer 7): each team's review of the last quarter, opened once.
    "audit-quarterly-reviews": {"task": "audit.open_quarterly_reviews", "schedule": 3600.0},
    # The activity page's hourly rollup (audit/services/rollup.py): the events stored since the
    # last run. Pages stay exact in between (they count the rest from the raw events).
    "audit-roll-up-activity": {"task": "audit.roll_up_activity", "schedule": 60.0},
}

# Seconds from a toggle to the rebuild of the bundle that carries it (gateways have the signed flags
# update already; other policy changes use MCPGOV_BUNDLE_REBUILD_DEBOUNCE_SECONDS).
MCPGOV_FLAGS_REBUILD_DELAY_SECONDS = float(os.environ.get("MCPGOV_FLAGS_REBUILD_DELAY_SECONDS", "5"))

# The streamed bundle long poll (docs/enforcer-api.md): a stream ends after at most this many seconds
# (each stream draws its own lifetime from the upper quarter, so gateways do not reconnect together) and
# carries a heartbeat comment at least every MCPGOV_BUNDLE_STREAM_HEARTBEAT_SECONDS.
MCPGOV_BUNDLE_STREAM_MAX_SECONDS = float(os.environ.get("MCPGOV_BUNDLE_STREAM_MAX_SECONDS", "300"))
MCPGOV_BUNDLE_STREAM_HEARTBEAT_SECONDS = float(os.environ.get("MCPGOV_BUNDLE_STREAM_HEARTBEAT_SECONDS", "15"))

# Signed flags updates kept per environment however old (newer ones than the live bundle always stay).
MCPGOV_FLAGS_UPDATES_KEEP = int(os.environ.get("MCPGOV_FLAGS_UPDATES_KEEP", "20"))

# Redis for the real-time push channel (flags, bundle versions) across web processes.
REDIS_URL = os.environ.get("REDIS_URL", "")

# /metrics answers loopback, or `Authorization: Bearer <this>` from anywhere (docs/operations.md, "Metrics").
MCPGOV_METRICS_TOKEN = os.environ.get("MCPGOV_METRICS_TOKEN", "")

# --- Product settings --------------------------------------------------------
# Key-encryption key for signing keys at rest (Fernet, urlsafe base64 32 bytes).
MCPGOV_KEY_ENCRYPTION_KEY = os.environ.get("MCPGOV_KEY_ENCRYPTION_KEY", "")
if not MCPGOV_KEY_ENCRYPTION_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("MCPGOV_KEY_ENCRYPTION_KEY must be set when DJANGO_DEBUG is off.")
    MCPGOV_KEY_ENCRYPTION_KEY = "ZGV2LW9ubHkta2V5LWVuY3J5cHRpb24ta2V5LTAwMDA="  # dev only
# The signing-key history head an operator pinned out of band (`manage.py signing_keys --head`);
# `verify_audit` then reports any key event the pin does not cover. Empty: chain checks only.
MCPGOV_PINNED_KEY_HEAD = os.environ.get("MCPGOV_PINNED_KEY_HEAD", "")
MCPGOV_AUDIT_EXPORT_DIR = Path(os.environ.get("MCPGOV_AUDIT_EXPORT_DIR", BASE_DIR / "var" / "exports"))
# Tool discovery from the portal (docs/gateway.md, "Tool discovery"). HTTP servers: the portal never
# connects to loopback, private, link-local, unique-local, multicast or metadata addresses, except to
# these networks (CIDRs, comma-separated). Stdio servers are discovered on the enforcement side
# (`mcpgov discover`); "sandbox" lets the portal run them under bubblewrap (checked by `manage.py check`).
MCPGOV_DISCOVERY_ALLOWED_NETWORKS = env_list("MCPGOV_DISCOVERY_ALLOWED_NETWORKS")
MCPGOV_PORTAL_STDIO_DISCOVERY = os.environ.get("MCPGOV_PORTAL_STDIO_DISCOVERY", "off")
MCPGOV_SANDBOX_PATHS = env_list("MCPGOV_SANDBOX_PATHS")  # extra read-only paths inside the sandbox
MCPGOV_SANDBOX_MEMORY_MB = int(os.environ.get("MCPGOV_SANDBOX_MEMORY_MB", "1024"))
MCPGOV_SANDBOX_CPU_SECONDS = int(os.environ.get("MCPGOV_SANDBOX_CPU_SECONDS", "30"))

# --- Single sign-on (OpenID Connect; docs/operations.md "Single sign-on", docs/deploy.md) ----------
# On when OIDC_CLIENT_ID and OIDC_ISSUER (discovery) or the explicit endpoints are set.
# mozilla-django-oidc reads the OIDC_RP_* / OIDC_OP_* names; portal.sso fills the endpoints from discovery.
OIDC_ISSUER = os.environ.get("OIDC_ISSUER", "").strip() or None
OIDC_RP_CLIENT_ID = os.environ.get("OIDC_CLIENT_ID", "")
OIDC_RP_CLIENT_SECRET = os.environ.get("OIDC_CLIENT_SECRET", "")
OIDC_OP_AUTHORIZATION_ENDPOINT = os.environ.get("OIDC_AUTHORIZATION_ENDPOINT", "")
OIDC_OP_TOKEN_ENDPOINT = os.environ.get("OIDC_TOKEN_ENDPOINT", "")
OIDC_OP_USER_ENDPOINT = os.environ.get("OIDC_USERINFO_ENDPOINT", "")
OIDC_OP_JWKS_ENDPOINT = os.environ.get("OIDC_JWKS_ENDPOINT", "")
OIDC_OP_END_SESSION_ENDPOINT = os.environ.get("OIDC_END_SESSION_ENDPOINT", "")
MCPGOV_SSO_ENABLED = bool(
    OIDC_RP_CLIENT_ID
    and (OIDC_ISSUER or (OIDC_OP_AUTHORIZATION_ENDPOINT and OIDC_OP_TOKEN_ENDPOINT and OIDC_OP_JWKS_ENDPOINT))
)
OIDC_PROVIDER_NAME = os.environ.get("OIDC_PROVIDER_NAME", "single sign-on")
OIDC_RP_SCOPES = os.environ.get("OIDC_SCOPES", "openid email profile groups")
OIDC_RP_SIGN_ALGO = os.environ.get("OIDC_SIGN_ALGO", "RS256")
OIDC_USE_PKCE = env_bool("OIDC_USE_PKCE", True)
OIDC_USE_NONCE = True
OIDC_STORE_ID_TOKEN = True  # the id_token_hint of RP-initiated logout
OIDC_TOKEN_USE_BASIC_AUTH = env_bool("OIDC_TOKEN_USE_BASIC_AUTH", True)
OIDC_VERIFY_SSL = env_bool("OIDC_VERIFY_SSL", True)
OIDC_TIMEOUT = float(os.environ.get("OIDC_TIMEOUT", "10"))
OIDC_AUTHENTICATION_CALLBACK_URL = "sso:callback"
OIDC_USERNAME_CLAIM = os.environ.get("OIDC_USERNAME_CLAIM", "preferred_username")
OIDC_GROUPS_CLAIM = os.environ.get("OIDC_GROUPS_CLAIM", "groups")
# "idp-group=team-slug:role,…" (roles: admin, reviewer, requester, viewer); checked by `manage.py check`.
OIDC_TEAM_ROLE_MAP = os.environ.get("OIDC_TEAM_ROLE_MAP", "")
OIDC_CREATE_USER = env_bool("OIDC_CREATE_USERS", True)
OIDC_LINK_BY_EMAIL = env_bool("OIDC_LINK_BY_EMAIL", False)
# Password login (form and POST, and the admin's): MCPGOV_LOCAL_LOGIN=0 leaves only single sign-on.
MCPGOV_LOCAL_LOGIN = env_bool("MCPGOV_LOCAL_LOGIN", True)
if not MCPGOV_LOCAL_LOGIN and not MCPGOV_SSO_ENABLED:
    raise ImproperlyConfigured(
        "MCPGOV_LOCAL_LOGIN=0 needs single sign-on configured (OIDC_ISSUER, OIDC_CLIENT_ID)."
    )
if MCPGOV_SSO_ENABLED:
    AUTHENTICATION_BACKENDS.insert(0, "portal.sso.backends.SsoBackend")
if not MCPGOV_LOCAL_LOGIN:
    AUTHENTICATION_BACKENDS.remove("django.contrib.auth.backends.ModelBackend")

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
    # a load balancer's plain-HTTP health probe is answered, not redirected
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
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
