"""Enumerations for teams and memberships."""

from django.db import models


class TeamRole(models.TextChoices):
    ADMIN = "admin", "Admin"
    REVIEWER = "reviewer", "Reviewer"
    REQUESTER = "requester", "Requester"
    VIEWER = "viewer", "Viewer"


class MembershipSource(models.TextChoices):
    """Who manages a membership: a team admin in the portal, or the identity provider at each SSO login."""

    LOCAL = "local", "Local"
    SSO = "sso", "Single sign-on"


class ChangeEventType(models.TextChoices):
    """What a change-history row records (Zulip's RealmAuditLog.event_type): one value per kind of write.

    Every app's services name theirs here, so the history page and the API filter by it and a newcomer
    finds every kind of change in one list. The coarse verb (`ChangeRecord.action`) follows from it."""

    # portal: teams, members, invitations
    TEAM_CREATED = "team_created", "Team created"
    MEMBER_ADDED = "member_added", "Member added"
    MEMBER_ROLE_CHANGED = "member_role_changed", "Member's role changed"
    MEMBER_REMOVED = "member_removed", "Member removed"
    INVITATION_SENT = "invitation_sent", "Invitation sent"
    INVITATION_ACCEPTED = "invitation_accepted", "Invitation accepted"
    INVITATION_REVOKED = "invitation_revoked", "Invitation revoked"
    TEAM_SETTINGS_UPDATED = "team_settings_updated", "Team settings changed"
    # governance: the policy lifecycle (drafts)
    DRAFT_CHANGE_ADDED = "draft_change_added", "Change added to the policy draft"
    DRAFT_CHANGE_REMOVED = "draft_change_removed", "Change taken out of the policy draft"
    DRAFT_APPROVED = "draft_approved", "Policy draft approved"
    DRAFT_DISCARDED = "draft_discarded", "Policy draft discarded"
    DRAFT_PUBLISHED = "draft_published", "Policy draft published"
    SHADOW_PUBLISHED = "shadow_published", "Policy draft published as a shadow"
    SHADOW_DROPPED = "shadow_dropped", "Shadow bundle dropped"
    # audit: the quarterly review (Layer 7)
    REVIEW_OPENED = "review_opened", "Policy review opened"
    REVIEW_SUGGESTION_ACCEPTED = "review_suggestion_accepted", "Review suggestion accepted"
    REVIEW_SUGGESTION_DISMISSED = "review_suggestion_dismissed", "Review suggestion dismissed"
    REVIEW_SIGNED_OFF = "review_signed_off", "Policy review signed off"
    # governance: catalogue, roles, environments, limits
    SERVER_CREATED = "server_created", "Server added"
    SERVER_UPDATED = "server_updated", "Server changed"
    SERVER_DELETED = "server_deleted", "Server removed"
    TOOLS_DISCOVERED = "tools_discovered", "Tools discovered"
    TOOL_UPDATED = "tool_updated", "Tool changed"
    TOOL_REPORT_DISMISSED = "tool_report_dismissed", "Tool report dismissed"
    ROLE_CREATED = "role_created", "Role added"
    ROLE_UPDATED = "role_updated", "Role changed"
    ROLE_DELETED = "role_deleted", "Role removed"
    ROLE_SERVER_ADDED = "role_server_added", "Server put on a role's list"
    ROLE_SERVER_REMOVED = "role_server_removed", "Server taken off a role's list"
    ENVIRONMENT_CREATED = "environment_created", "Environment added"
    ENVIRONMENT_UPDATED = "environment_updated", "Environment changed"
    ENVIRONMENT_DELETED = "environment_deleted", "Environment removed"
    BINDING_CREATED = "binding_created", "Server bound"
    BINDING_UPDATED = "binding_updated", "Binding changed"
    BINDING_DELETED = "binding_deleted", "Server unbound"
    GLOBAL_LIMITS_UPDATED = "global_limits_updated", "Global limits changed"
    SERVER_LIMITS_CREATED = "server_limits_created", "Server limits set"
    SERVER_LIMITS_UPDATED = "server_limits_updated", "Server limits changed"
    SERVER_LIMITS_DELETED = "server_limits_deleted", "Server limits removed"
    TRIGGER_SETTINGS_UPDATED = "trigger_settings_updated", "Trigger settings changed"
    POLICY_IMPORTED = "policy_imported", "Policy imported"
    # governance: flags and production access
    FLAG_CREATED = "flag_created", "Flag added"
    FLAG_DELETED = "flag_deleted", "Flag removed"
    FLAG_DISABLED = "flag_disabled", "Flag disabled"
    FLAG_ENABLED = "flag_enabled", "Flag enabled"
    FLAG_CONSTRAINTS_CHANGED = "flag_constraints_changed", "Flag constraints changed"
    ACCESS_REQUESTED = "access_requested", "Production access requested"
    ACCESS_APPROVED = "access_approved", "Production access approved"
    ACCESS_DENIED = "access_denied", "Production access denied"
    ACCESS_REVOKED = "access_revoked", "Production access revoked"
    ACCESS_CANCELLED = "access_cancelled", "Production access request cancelled"
    ACCESS_EXPIRED = "access_expired", "Production access expired"
    # governance: who enforces
    AGENT_CREATED = "agent_created", "Agent registered"
    AGENT_UPDATED = "agent_updated", "Agent changed"
    AGENT_REVOKED = "agent_revoked", "Agent revoked"
    AGENT_KEY_ISSUED = "agent_key_issued", "Agent API key issued"
    AGENT_KEY_REVOKED = "agent_key_revoked", "Agent API key revoked"
    CLIENT_CREATED = "client_created", "Enforcement client registered"
    CLIENT_REVOKED = "client_revoked", "Enforcement client revoked"
    CLIENT_STALE = "client_stale", "Enforcement client not seen"
    # audit
    SESSION_RELEASED = "session_released", "Session allowed to continue"
    SESSION_ENDED = "session_ended", "Session ended by a reviewer"
    SESSION_TIMED_OUT = "session_timed_out", "Session ended: gateway stopped reporting"
    CALL_APPROVED = "call_approved", "Call approved"
    CALL_DENIED = "call_denied", "Call denied"
    FAILED_CALL_EXPLAINED = "failed_call_explained", "Failed call explained"
    FAILED_CALL_EXPLANATION_CHANGED = "failed_call_explanation_changed", "Failed-call explanation changed"
    SESSION_ACKNOWLEDGED = "session_acknowledged", "Session log acknowledged"
    DIGEST_SEALED = "digest_sealed", "Audit digest sealed"
    SINK_CREATED = "sink_created", "Audit sink created"
    SINK_UPDATED = "sink_updated", "Audit sink changed"
    SINK_DELETED = "sink_deleted", "Audit sink deleted"
    # incidents (one per timeline entry kind)
    INCIDENT_OPENED = "incident_opened", "Incident opened"
    INCIDENT_CONTAINED = "incident_contained", "Incident contained"
    INCIDENT_SESSION_LINKED = "incident_session_linked", "Session linked to an incident"
    INCIDENT_ROOT_CAUSE = "incident_root_cause", "Incident root cause recorded"
    INCIDENT_RESOLVED = "incident_resolved", "Incident resolved"
    INCIDENT_FLAGS_REENABLED = "incident_flags_reenabled", "Incident's flags re-enabled"
    INCIDENT_NOTE = "incident_note", "Incident note"
    INCIDENT_FLAG_CREATED = "incident_flag_created", "Flag added to contain an incident"
    # rows older than event types that no rule of the back-fill recognised (migration 0004)
    OTHER = "other", "Other change"

    @property
    def action(self) -> str:
        """The coarse verb of the row (a ChangeRecord.Action value): create, update, delete, import or action."""
        return _EVENT_ACTIONS.get(self, "action")


E = ChangeEventType
# A table: a line per verb reads better than a line per type.
# fmt: off
_EVENT_ACTIONS = {
    **dict.fromkeys(
        [E.TEAM_CREATED, E.MEMBER_ADDED, E.INVITATION_SENT, E.SERVER_CREATED, E.ROLE_CREATED,
         E.ENVIRONMENT_CREATED, E.BINDING_CREATED, E.SERVER_LIMITS_CREATED, E.FLAG_CREATED,
         E.ACCESS_REQUESTED, E.AGENT_CREATED, E.AGENT_KEY_ISSUED, E.CLIENT_CREATED,
         E.FAILED_CALL_EXPLAINED, E.DIGEST_SEALED, E.SINK_CREATED, E.INCIDENT_FLAG_CREATED, E.REVIEW_OPENED],
        "create",
    ),
    **dict.fromkeys(
        [E.MEMBER_ROLE_CHANGED, E.SERVER_UPDATED, E.TOOL_UPDATED, E.ROLE_UPDATED, E.ROLE_SERVER_ADDED,
         E.ROLE_SERVER_REMOVED, E.ENVIRONMENT_UPDATED, E.BINDING_UPDATED, E.GLOBAL_LIMITS_UPDATED,
         E.SERVER_LIMITS_UPDATED, E.TRIGGER_SETTINGS_UPDATED, E.FLAG_DISABLED, E.FLAG_ENABLED,
         E.FLAG_CONSTRAINTS_CHANGED, E.AGENT_UPDATED, E.FAILED_CALL_EXPLANATION_CHANGED, E.SINK_UPDATED,
         E.TEAM_SETTINGS_UPDATED, E.DRAFT_CHANGE_ADDED, E.DRAFT_CHANGE_REMOVED, E.DRAFT_APPROVED,
         E.DRAFT_PUBLISHED, E.SHADOW_PUBLISHED, E.REVIEW_SUGGESTION_ACCEPTED, E.REVIEW_SUGGESTION_DISMISSED,
         E.REVIEW_SIGNED_OFF],
        "update",
    ),
    **dict.fromkeys(
        [E.MEMBER_REMOVED, E.INVITATION_REVOKED, E.SERVER_DELETED, E.ROLE_DELETED, E.ENVIRONMENT_DELETED,
         E.BINDING_DELETED, E.SERVER_LIMITS_DELETED, E.FLAG_DELETED, E.SINK_DELETED, E.DRAFT_DISCARDED,
         E.SHADOW_DROPPED],
        "delete",
    ),
    E.POLICY_IMPORTED: "import",
}
# fmt: on
del E
