"""ASGI entry point (uvicorn config.asgi:application); long polls and streams need it."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

# After Django is set up, two routes are answered in front of Django's handler: the bundle
# endpoint's long poll without Django's per-request thread (governance.api.bundle.asgi_bundle_route)
# and a stored audit batch without the middleware and DRF around it
# (audit.api.events_route.asgi_events_route). Everything else, and every answer those two routes
# do not give themselves, is Django's.
from audit.api.events_route import asgi_events_route  # noqa: E402
from governance.api.bundle import asgi_bundle_route  # noqa: E402
from portal.warmup import warm  # noqa: E402

application = asgi_bundle_route(asgi_events_route(django_application))
warm()  # before the first request: a freshly started worker's first kill switch is not its slowest
