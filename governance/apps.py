from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Governance (policy)"

    def ready(self) -> None:
        from django.core import checks

        from governance.checks import discovery_settings

        checks.register(discovery_settings)
