"""Agent sessions and their append-only, hash-chained audit events."""
