"""What a web process does once it has started, before its first request (config/asgi.py).

Django loads the URL configuration, and with it every view module, on the first request a process
serves; the first notification opens the Redis connection it is published on. The first kill switch
thrown on a freshly started worker paid for both — 170-630 ms measured through uvicorn (2026-12-03)
before any gateway heard of it, against ~40 ms for the next ones — so a deploy left the portal slowest
at the one moment it must not be. Doing both at start moves that cost to the process's start-up, where nobody waits for
it. Nothing here is needed for correctness: each step that fails is logged and done again on demand.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def warm() -> None:
    from django.urls import get_resolver

    from portal import realtime

    try:
        get_resolver().url_patterns  # noqa: B018 - imports every view module, as the first request would
    except Exception:  # the first request reports it, with its traceback, as Django does
        logger.warning("warm-up: the URL configuration did not load", exc_info=True)
    realtime.connect_publisher()
