"""Enumerations for policy objects (stored values are the seed's vocabulary)."""

from django.db import models

# the enforcer's policy defaults (defined once, in the bundle schema)
from mcpgov.bundle import DEFAULT_CASCADE_WRITE_THRESHOLD as DEFAULT_CASCADE_WRITE_THRESHOLD
from mcpgov.bundle import DEFAULT_LARGE_DATA_BYTES as DEFAULT_LARGE_DATA_BYTES
from mcpgov.bundle import DEFAULT_PRODUCTION_URL_WORDS as DEFAULT_PRODUCTION_URL_WORDS


class ServerCategory(models.TextChoices):
    FILESYSTEM = "filesystem", "Filesystem"
    SHELL_EXECUTION = "shell_execution", "Shell execution"
    DATABASE = "database", "Database"
    API = "api", "API"
    CLOUD_INFRASTRUCTURE = "cloud_infrastructure", "Cloud infrastructure"
    WEB = "web", "Web"
    OTHER = "other", "Other"


class Transport(models.TextChoices):
    STDIO = "stdio", "stdio command"
    HTTP = "http", "Streamable HTTP URL"


class AccessClass(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Write"


class UnknownToolPolicy(models.TextChoices):
    """A server's `allow_unknown_tools` in the bundle: what the gateway does with a tool it does not know."""

    DENY = "deny", "Hide and refuse (reported for review)"
    AS_WRITE = "as_write", "Allow, classed as write"


class AgentAuth(models.TextChoices):
    """How the gateway established the agent of a session."""

    OAUTH = "oauth", "OAuth access token"
    API_KEY = "api_key", "Agent API key"
    LOCAL = "local", "Local (stdio, the OS user who started the gateway)"


class RuleKind(models.TextChoices):
    ALLOWED = "allowed", "Allowed"
    FORBIDDEN = "forbidden", "Forbidden"


class Permission(models.TextChoices):
    READ_ONLY = "read_only", "Read only"
    READ_WRITE = "read_write", "Read and write"


class TargetKind(models.TextChoices):
    PATH = "path", "Path"
    URL = "url", "URL"


class Capability(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Write"
    ALL = "all", "All"


class ConstraintOperator(models.TextChoices):
    IN = "IN", "IN"
    NOT_IN = "NOT_IN", "NOT IN"


class AccessRequestStatus(models.TextChoices):
    PENDING = "pending", "Pending review"
    APPROVED = "approved", "Approved"
    DENIED = "denied", "Denied"
    EXPIRED = "expired", "Expired"
    REVOKED = "revoked", "Revoked"
    CANCELLED = "cancelled", "Cancelled"


class SigningKeyStatus(models.TextChoices):
    ACTIVE = "active", "Active (signs new bundles)"
    PUBLISHED = "published", "Published (verifies old bundles)"
    RETIRED = "retired", "Retired"


class SigningKeyEventType(models.TextChoices):
    """What happened to a signing key, as written in the append-only key history."""

    CREATED = "created", "Created (active, published in the team's JWKS)"
    ROTATED = "rotated", "Rotated out (still published)"
    RETIRED = "retired", "Retired (no longer published)"


DEFAULT_ENVIRONMENTS = ("development", "staging", "production")
PRODUCTION = "production"


class ToolReportSource(models.TextChoices):
    DISCOVER = "discover", "mcpgov discover"
    GATEWAY = "gateway", "Gateway at session start"


class ToolReportStatus(models.TextChoices):
    PENDING = "pending", "Waiting for review"
    APPROVED = "approved", "Approved"
    DISMISSED = "dismissed", "Dismissed"
    SUPERSEDED = "superseded", "Superseded"


class DraftStatus(models.TextChoices):
    OPEN = "open", "Open"
    PUBLISHED = "published", "Published"
    DISCARDED = "discarded", "Discarded"
