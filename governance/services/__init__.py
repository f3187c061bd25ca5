"""Writes to policy. Every write validates, runs in one transaction, records a ChangeRecord,
and schedules a bundle rebuild on commit (see `policy_changed`)."""
