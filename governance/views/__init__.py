"""Server-rendered pages for administering a team's policy, one module per concept."""
