from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit (sessions and events)"

    def ready(self) -> None:
        from audit.services import sessions
        from portal import realtime

        # The control long poll's fallback source (portal/realtime.py).
        realtime.register_source(sessions.CONTROL_CHANNEL, sessions.control_channel_versions)
