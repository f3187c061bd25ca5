from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit (sessions and events)"

    def ready(self) -> None:
        from audit.metrics import session_gauges
        from audit.services import sessions
        from portal import metrics, realtime

        # The control long poll's fallback source (portal/realtime.py).
        realtime.register_source(sessions.CONTROL_CHANNEL, sessions.control_channel_versions)
        metrics.add_scrape_source(session_gauges)
