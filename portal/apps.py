from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal (teams and accounts)"

    def ready(self):
        from django.core import checks

        from portal.sso.checks import check_sso_settings

        checks.register(check_sso_settings)
