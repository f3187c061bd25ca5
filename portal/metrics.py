"""The portal's Prometheus metrics and its ``/metrics`` endpoint (docs/operations.md, "Metrics").

Counters, histograms and the long-poll gauge move where things happen (request middleware below,
``portal.realtime``, ``governance.services.bundles.bundle_publish``, ``audit.services.ingest``); sessions
by state and the Celery queue length are read when Prometheus scrapes. Under ``uvicorn --workers N`` set
``PROMETHEUS_MULTIPROC_DIR`` (an empty directory, wiped before each start): every worker then writes its
values there (prometheus-client's multiprocess mode) and whichever worker answers a scrape reports the
sum of all of them; without it each process reports only its own values.

``/metrics`` answers a request from loopback (with no proxy forwarding header), or one carrying
``Authorization: Bearer <MCPGOV_METRICS_TOKEN>``; anyone else gets 404 (403 for a wrong token).
"""

from __future__ import annotations

import contextlib
import glob
import hmac
import ipaddress
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import Http404, HttpResponse, HttpResponseForbidden
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

REQUESTS = Counter(
    "mcpgov_portal_http_requests",
    "HTTP requests by view (URL name), method and status",
    ["view", "method", "status"],
    registry=None,
)
REQUEST_SECONDS = Histogram(
    "mcpgov_portal_http_request_duration_seconds",
    "Time to produce a response, by view (a long poll counts its wait)",
    ["view", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=None,
)
LONGPOLL_WAITERS = Gauge(
    "mcpgov_portal_longpoll_waiters",
    "Long polls waiting for a change, by channel family (bundle, session-control, ...)",
    ["channel"],
    multiprocess_mode="livesum",
    registry=None,
)
BUNDLE_BUILDS = Counter(
    "mcpgov_portal_bundle_builds",
    "Bundle compilations by outcome: published (a new signed version) or unchanged",
    ["outcome"],
    registry=None,
)
BUNDLE_BUILD_SECONDS = Histogram(
    "mcpgov_portal_bundle_build_duration_seconds",
    "Time to compile (and sign, when published) one environment's bundle",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=None,
)
EVENTS_INGESTED = Counter(
    "mcpgov_portal_audit_events_ingested", "Audit events stored (duplicates not counted)", registry=None
)
INGEST_LAG = Histogram(
    "mcpgov_portal_audit_ingest_lag_seconds",
    "received_at minus the event's own timestamp: how late audit events reach the portal",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0),
    registry=None,
)
FLAGS_UPDATE_DELIVERY = Histogram(
    "mcpgov_portal_flags_update_delivery_seconds",
    "From a signed flags update's issue (the toggle, before its commit) to its reply handed to the "
    "server for one waiting gateway: how fast a kill switch leaves the portal",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=None,
)
_LIVE = (
    REQUESTS,
    REQUEST_SECONDS,
    LONGPOLL_WAITERS,
    BUNDLE_BUILDS,
    BUNDLE_BUILD_SECONDS,
    EVENTS_INGESTED,
    INGEST_LAG,
    FLAGS_UPDATE_DELIVERY,
)


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


# --- where things happen ---------------------------------------------------------------------------


def request_observed(view: str, method: str, status: int, started: float) -> None:
    REQUESTS.labels(view, method, str(status)).inc()
    REQUEST_SECONDS.labels(view, method).observe(time.perf_counter() - started)


def waiter_added(channel: str, delta: int) -> None:
    LONGPOLL_WAITERS.labels(channel.partition(":")[0]).inc(delta)


def bundle_built(started: float, *, created: bool) -> None:
    outcome = "published" if created else "unchanged"
    BUNDLE_BUILDS.labels(outcome).inc()
    BUNDLE_BUILD_SECONDS.labels(outcome).observe(time.perf_counter() - started)


def flags_update_delivered(issued_at: float) -> None:
    """A flags update's reply (issued at `issued_at`, Unix time) is on its way to one gateway."""
    FLAGS_UPDATE_DELIVERY.observe(max(time.time() - issued_at, 0.0))


def events_ingested(events: list[Any], received_at: Any) -> None:
    """One count and one lag observation per stored event (µs each; a batch holds at most 1,000)."""
    EVENTS_INGESTED.inc(len(events))
    received = received_at.timestamp()
    histogram_observe_many(INGEST_LAG, [max(received - e.ts.timestamp(), 0.0) for e in events])


def histogram_observe_many(histogram: Histogram, values: list[float]) -> None:
    """`histogram.observe(v)` for each value, with one increment per bucket instead of per value.

    Ingestion observes up to 1,000 lags a batch; `observe` takes the value lock and walks the
    buckets each time (~2 µs). This reaches into prometheus_client's Histogram (`_upper_bounds`,
    `_buckets`, `_sum`, stable since 0.4); without them it falls back to `observe`.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:
        for value in values:
            histogram.observe(value)
        return
    histogram._raise_if_not_observable()
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bound >= value, as observe() picks it
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)
    total.inc(sum(values))


class RequestMetricsMiddleware:
    """Counts every response by URL name, method and status (outermost, so other middleware's answers count).

    Hand-written rather than django-prometheus: that package's middleware is sync-only (an async
    request, a long poll among them, would hop to a thread twice), registers a few dozen series on the
    global registry, and its view would need our access rule anyway; this is a dozen lines.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        started = time.perf_counter()
        response = self.get_response(request)
        request_observed(_view_name(request), request.method, response.status_code, started)
        return response

    async def __acall__(self, request):
        started = time.perf_counter()
        response = await self.get_response(request)
        request_observed(_view_name(request), request.method, response.status_code, started)
        return response


def _view_name(request) -> str:
    match = getattr(request, "resolver_match", None)
    return match.view_name if match is not None else "(unmatched)"


# --- read at scrape time ---------------------------------------------------------------------------


_SCRAPE_SOURCES: list[Callable[[], Iterator[Any]]] = []


def add_scrape_source(source: Callable[[], Iterator[Any]]) -> None:
    """An app's metric families read at scrape time (registered in its AppConfig.ready(), so this
    ground-floor module imports no app above it)."""
    if source not in _SCRAPE_SOURCES:
        _SCRAPE_SOURCES.append(source)


class _ScrapeCollector(Collector):
    def collect(self) -> Iterator[Any]:
        for source in _SCRAPE_SOURCES:
            yield from source()
        length = celery_queue_length()
        if length is not None:
            queue = GaugeMetricFamily(
                "mcpgov_portal_celery_queue_length", "Tasks waiting in the Celery queue", labels=["queue"]
            )
            queue.add_metric([_default_queue()], length)
            yield queue


def _default_queue() -> str:
    return getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "") or "celery"


def celery_queue_length() -> int | None:
    """``LLEN`` of the default queue when the broker is Redis; None otherwise (or when it does not answer)."""
    url = getattr(settings, "CELERY_BROKER_URL", "")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return int(client.llen(_default_queue()))
        finally:
            client.close()
    except redis.RedisError:
        logger.warning("metrics: the Celery broker did not answer LLEN", exc_info=True)
        return None


def _forget_dead_workers(directory: str) -> None:
    """A worker that died leaves its live-gauge files behind; drop them so its waiters stop counting."""
    from prometheus_client import multiprocess

    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = path.rsplit("_", 1)[-1].removesuffix(".db")
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(int(pid), directory)
        except PermissionError:
            pass  # alive, another user's


def registry() -> CollectorRegistry:
    """A registry for one scrape: every worker's values (multiprocess) or this process's, plus the DB reads."""
    reg = CollectorRegistry(auto_describe=False)
    directory = multiprocess_dir()
    if directory:
        from prometheus_client import multiprocess

        _forget_dead_workers(directory)
        multiprocess.MultiProcessCollector(reg, path=directory)
    else:
        for metric in _LIVE:
            reg.register(metric)
    reg.register(_ScrapeCollector())
    return reg


# --- the endpoint ----------------------------------------------------------------------------------

_FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def _from_loopback(request) -> bool:
    if any(h in request.META for h in _FORWARDING_HEADERS):
        return False  # relayed by a proxy on this host: the client is elsewhere
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    return False


def metrics_view(request):
    token = getattr(settings, "MCPGOV_METRICS_TOKEN", "")
    auth = request.META.get("HTTP_AUTHORIZATION", "")
    if auth:
        scheme, _, presented = auth.partition(" ")
        if not (token and scheme.lower() == "bearer" and hmac.compare_digest(presented.strip(), token)):
            return HttpResponseForbidden("bad metrics token\n", content_type="text/plain")
    elif not _from_loopback(request):
        raise Http404
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
