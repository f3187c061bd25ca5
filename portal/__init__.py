"""The ground floor: teams and memberships, permissions, change history, the realtime notifier, the page toolkit."""
