from django.apps import AppConfig


class IncidentsConfig(AppConfig):
    name = "incidents"
    verbose_name = "Incidents"

    def ready(self) -> None:
        # The quarterly review (audit) lists servers involved in incidents; audit cannot import incidents.
        from audit.services.reviews import register_suggestion_source
        from incidents.selectors import review_incident_suggestions

        register_suggestion_source(review_incident_suggestions)
