"""REST API for agent sessions and audit events."""
