"""mcpgov: the MCP governance enforcer (bundle schema, verification, decision engine, gateway, CLI).

Pure Python on the official ``mcp`` SDK; never imports Django.
"""

__version__ = "0.1.0"
