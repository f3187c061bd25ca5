"""Audit models: agent sessions, events, acknowledgements and sealed digests."""
