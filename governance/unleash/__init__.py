"""The Unleash client API (/api/client/...) so stock Unleash SDKs evaluate the MCP kill-switch flags."""
