"""Policy: the MCP server catalogue, agent roles, environments, limits, triggers, flags,
production-access grants, incidents, enforcement clients and signed bundles."""
