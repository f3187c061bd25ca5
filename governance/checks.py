"""System checks (`manage.py check`) for the discovery settings: a bad network list or an enabled
sandbox that cannot run is an error at start-up, not a surprise at the first discovery."""

from __future__ import annotations

from django.core import checks
from django.core.exceptions import ImproperlyConfigured


def discovery_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    from governance.services import netguard, sandbox

    errors: list[checks.CheckMessage] = []
    try:
        netguard.allowed_networks()
    except ImproperlyConfigured as exc:
        errors.append(checks.Error(str(exc), id="governance.E001"))
    mode = sandbox.stdio_mode()
    if mode not in sandbox.MODES:
        errors.append(
            checks.Error(
                f"MCPGOV_PORTAL_STDIO_DISCOVERY={mode!r}: use 'off' (default) or 'sandbox'.",
                id="governance.E002",
            )
        )
    elif mode == sandbox.SANDBOX and (problem := sandbox.sandbox_problem()) is not None:
        errors.append(
            checks.Error(
                f"MCPGOV_PORTAL_STDIO_DISCOVERY=sandbox cannot be enabled: {problem}",
                hint="Install bubblewrap (apt-get install bubblewrap) where user namespaces work, or set it to 'off'.",
                id="governance.E003",
            )
        )
    return errors
