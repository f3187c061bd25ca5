"""import_policy, export_policy, discover_tools, seed_demo."""
