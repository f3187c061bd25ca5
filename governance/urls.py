"""Web UI routes for policy administration (mounted at /governance/)."""

from django.urls import path

from governance.views import (
    access,
    agents,
    bundles,
    clients,
    drafts,
    environments,
    flags,
    history,
    limits,
    policy_io,
    roles,
    servers,
)

app_name = "governance"

urlpatterns = [
    # MCP server catalogue
    path("servers/", servers.server_list, name="server-list"),
    path("servers/add/", servers.server_create, name="server-create"),
    path("servers/<int:pk>/", servers.server_detail, name="server-detail"),
    path("servers/<int:pk>/edit/", servers.server_edit, name="server-edit"),
    path("servers/<int:pk>/delete/", servers.server_delete, name="server-delete"),
    path("servers/<int:pk>/discover/", servers.server_discover, name="server-discover"),
    path("tools/<int:pk>/edit/", servers.tool_edit, name="tool-edit"),
    path("tool-reports/<int:pk>/approve/", servers.tool_report_approve, name="tool-report-approve"),
    path("tool-reports/<int:pk>/dismiss/", servers.tool_report_dismiss, name="tool-report-dismiss"),
    # Agent roles and their allowlists
    path("roles/", roles.role_list, name="role-list"),
    path("roles/add/", roles.role_create, name="role-create"),
    path("roles/<int:pk>/", roles.role_detail, name="role-detail"),
    path("roles/<int:pk>/edit/", roles.role_edit, name="role-edit"),
    path("roles/<int:pk>/delete/", roles.role_delete, name="role-delete"),
    path("roles/<int:pk>/servers/add/", roles.role_server_add, name="role-server-add"),
    path("roles/<int:pk>/servers/<int:rule_pk>/remove/", roles.role_server_remove, name="role-server-remove"),
    # Environments and server bindings
    path("environments/", environments.environment_list, name="environment-list"),
    path("environments/add/", environments.environment_create, name="environment-create"),
    path("environments/<int:pk>/", environments.environment_detail, name="environment-detail"),
    path("environments/<int:pk>/edit/", environments.environment_edit, name="environment-edit"),
    path("environments/<int:pk>/delete/", environments.environment_delete, name="environment-delete"),
    path("environments/<int:pk>/bindings/add/", environments.binding_create, name="binding-create"),
    path("bindings/<int:pk>/edit/", environments.binding_edit, name="binding-edit"),
    path("bindings/<int:pk>/delete/", environments.binding_delete, name="binding-delete"),
    # Rate limits and kill-switch triggers
    path("limits/", limits.limits, name="limits"),
    path("limits/global/", limits.global_limits_edit, name="global-limits-edit"),
    path("limits/triggers/", limits.trigger_settings_edit, name="trigger-settings-edit"),
    path("limits/servers/add/", limits.server_limits_create, name="server-limits-create"),
    path("limits/servers/<int:pk>/edit/", limits.server_limits_edit, name="server-limits-edit"),
    path("limits/servers/<int:pk>/delete/", limits.server_limits_delete, name="server-limits-delete"),
    # The policy draft (edits collected, previewed, approved, published as one version)
    path("draft/", drafts.draft_detail, name="draft-detail"),
    path("draft/publish/", drafts.draft_publish, name="draft-publish"),
    path("draft/approve/", drafts.draft_approve, name="draft-approve"),
    path("draft/discard/", drafts.draft_discard, name="draft-discard"),
    path("draft/shadow/", drafts.draft_shadow, name="draft-shadow"),
    path("draft/shadow/drop/", drafts.shadow_drop, name="shadow-drop"),
    path("draft/changes/<int:position>/remove/", drafts.draft_change_remove, name="draft-change-remove"),
    # Policy YAML import and export
    path("policy/import/", policy_io.policy_import, name="policy-import"),
    path("policy/export/", policy_io.policy_export, name="policy-export"),
    # Change history
    path("history/", history.history, name="history"),
    # Enforcement clients and signed policy bundles
    path("clients/", clients.client_list, name="client-list"),
    path("clients/add/", clients.client_create_view, name="client-create"),
    path("clients/<int:pk>/revoke/", clients.client_revoke_view, name="client-revoke"),
    # Agents: who calls tools (OAuth clients of the portal, static API keys)
    path("agents/", agents.agent_list, name="agent-list"),
    path("agents/add/", agents.agent_create, name="agent-create"),
    path("agents/<int:pk>/", agents.agent_detail, name="agent-detail"),
    path("agents/<int:pk>/edit/", agents.agent_edit, name="agent-edit"),
    path("agents/<int:pk>/revoke/", agents.agent_revoke, name="agent-revoke"),
    path("agents/<int:pk>/api-keys/", agents.agent_api_key_create, name="agent-api-key-create"),
    path(
        "agents/<int:pk>/api-keys/<int:key_pk>/revoke/",
        agents.agent_api_key_revoke,
        name="agent-api-key-revoke",
    ),
    path("bundles/", bundles.bundle_list, name="bundle-list"),
    path("bundles/<int:pk>/", bundles.bundle_detail, name="bundle-detail"),
    path("bundles/<int:pk>/raw/", bundles.bundle_raw, name="bundle-raw"),
    path("effective/", bundles.effective_policy_view, name="effective-policy"),
    path("bundles/diff/", bundles.bundle_diff_view, name="bundle-diff"),
    path("bundles/rebuild/", bundles.bundle_rebuild, name="bundle-rebuild"),
]

# Production access and the kill-switch panel (governance/views/{access,flags}.py).
urlpatterns += [
    path("access/", access.access_list, name="access-list"),
    path("access/new/", access.access_create, name="access-create"),
    path("access/<int:pk>/", access.access_detail, name="access-detail"),
    path("access/<int:pk>/approve/", access.access_approve, name="access-approve"),
    path("access/<int:pk>/deny/", access.access_deny, name="access-deny"),
    path("access/<int:pk>/revoke/", access.access_revoke, name="access-revoke"),
    path("access/<int:pk>/cancel/", access.access_cancel, name="access-cancel"),
    path("flags/", flags.flag_panel, name="flag-list"),
    path("flags/add/", flags.flag_create, name="flag-create"),
    path("flags/<int:pk>/", flags.flag_detail, name="flag-detail"),
    path("flags/<int:pk>/delete/", flags.flag_delete, name="flag-delete"),
    path("flags/<int:pk>/disable/", flags.flag_disable, name="flag-disable-all"),
    path("flags/<int:pk>/<int:env_pk>/disable/", flags.flag_disable, name="flag-disable"),
    path("flags/<int:pk>/<int:env_pk>/enable/", flags.flag_enable, name="flag-enable"),
    path("flags/<int:pk>/<int:env_pk>/strategy/", flags.flag_state_edit, name="flag-state-edit"),
]
