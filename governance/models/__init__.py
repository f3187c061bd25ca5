"""Policy models, one module per concept."""

from governance.models.access import AccessRequest, AccessReview
from governance.models.agents import Agent, AgentApiKey, AgentRevokedToken
from governance.models.bundles import (
    EnforcementClient,
    FlagsUpdate,
    PolicyBundle,
    SigningKey,
    SigningKeyEvent,
)
from governance.models.drafts import PolicyDraft, PolicyDraftChange, ShadowBundle
from governance.models.environments import Environment, ServerBinding
from governance.models.flags import Flag, FlagState
from governance.models.limits import GlobalRateLimit, ServerRateLimit, TriggerSettings
from governance.models.roles import AgentRole, RoleServerRule
from governance.models.servers import SERVER_REQUEST_FIELDS, McpServer, McpTool, ToolReport

__all__ = [
    "SERVER_REQUEST_FIELDS",
    "AccessRequest",
    "AccessReview",
    "Agent",
    "AgentApiKey",
    "AgentRevokedToken",
    "AgentRole",
    "EnforcementClient",
    "Environment",
    "Flag",
    "FlagState",
    "FlagsUpdate",
    "GlobalRateLimit",
    "McpServer",
    "McpTool",
    "PolicyBundle",
    "PolicyDraft",
    "PolicyDraftChange",
    "RoleServerRule",
    "ServerBinding",
    "ServerRateLimit",
    "ShadowBundle",
    "SigningKey",
    "SigningKeyEvent",
    "ToolReport",
    "TriggerSettings",
]
