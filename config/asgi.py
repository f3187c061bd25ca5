"""ASGI entry point (uvicorn config.asgi:application); long polls and streams need it."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

# After Django is set up: the bundle endpoint's long poll is answered without Django's
# per-request thread (see governance.api.bundle.asgi_bundle_route).
from governance.api.bundle import asgi_bundle_route  # noqa: E402

application = asgi_bundle_route(django_application)
