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
        # The kill-switch pages (governance) ask audit which sessions a flag halted.
        from governance.services.flags import flag_recovery

        flag_recovery.halted_counts = sessions.halted_counts_by_flag
        flag_recovery.enable_and_resume = sessions.flag_enable_and_resume
