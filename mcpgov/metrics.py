"""The gateway's Prometheus metrics (``mcpgov gateway --metrics HOST:PORT``): calls, latencies, spool, bundle.

Each gateway has its own registry (several gateways may run in one process, e.g. in tests). Counters and
histograms move on the call path (:class:`mcpgov.tracing.CallObserver` feeds them); the bundle, the spool
backlog and the sessions are read when Prometheus scrapes. Label values the agent chooses (server, tool)
are kept to the names the gateway knows, so a caller cannot blow up the series count. The endpoint is
served by prometheus-client's own HTTP server thread, on loopback unless ``--metrics-public`` says
otherwise. Names and the sample alert rules: ``docs/operations.md`` ("Metrics").
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from mcpgov.gateway import Gateway

UNKNOWN = "(unknown)"
# the gateway's own work is microseconds; an approval wait can be minutes
DECISION_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.025, 0.1, 1.0, 10.0, 60.0, 300.0)
UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


class MetricsAddressError(ValueError):
    """--metrics names a non-loopback address without --metrics-public, or is malformed."""


def parse_address(value: str, *, public: bool) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6); a non-loopback host needs ``public``."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise MetricsAddressError(f"--metrics wants HOST:PORT, not {value!r}")
    host = host.strip("[]") or "127.0.0.1"
    if host == "localhost":
        loopback = True
    else:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False  # a host name: it may resolve to anything
    if not loopback and not public:
        raise MetricsAddressError(
            f"--metrics {value}: {host} is not a loopback address; add --metrics-public to expose the "
            "metrics beyond this host"
        )
    return host, int(port)


class GatewayMetrics:
    """The metrics of one gateway, in their own registry."""

    def __init__(self, gateway: Gateway, registry: CollectorRegistry | None = None) -> None:
        self.gateway = gateway
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.calls = Counter(
            "mcpgov_gateway_calls",
            "tools/call requests by server, tool, verdict (allow/refuse), outcome of the RESULT and trigger",
            ["server", "tool", "verdict", "outcome", "trigger"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            "mcpgov_gateway_decision_seconds",
            "Time from receiving a call to its verdict (policy decision, INTENT written, approval wait)",
            ["verdict"],
            buckets=DECISION_BUCKETS,
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "mcpgov_gateway_upstream_seconds",
            "Time an upstream MCP server took to answer a forwarded tools/call",
            ["server"],
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self.state_changes = Counter(
            "mcpgov_gateway_session_state_changes",
            "Sessions halted or paused by the gateway, by new state and trigger",
            ["state", "trigger"],
            registry=r,
        )
        r.register(_ScrapeCollector(gateway))

    def known_server(self, server: str) -> str:
        g = self.gateway
        return server if server in g.upstreams or server in g.verified.bundle.servers else UNKNOWN

    def known_tool(self, exposed: str, server: str, tool: str) -> str:
        if exposed in self.gateway.index:  # a tool an upstream lists (one dict lookup)
            return tool
        spec = self.gateway.verified.bundle.servers.get(server)
        return tool if spec is not None and tool in spec.tools else UNKNOWN

    def serve(self, host: str, port: int) -> Callable[[], None]:
        """Serve ``/metrics`` on ``host:port`` (a daemon thread); returns the function that stops it."""
        from prometheus_client import start_http_server

        server, thread = start_http_server(port, addr=host, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)

        return stop


class _ScrapeCollector(Collector):
    """What is read at scrape time: bundle, spool backlog, sessions, shipper (runs in the HTTP thread)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Any]:
        g = self.gateway
        o = g.options
        verified = g.verified
        bundle = verified.bundle
        now = time.time()
        info = InfoMetricFamily("mcpgov_gateway", "The gateway: team, environment and role it enforces")
        info.add_metric([], {"team": bundle.team, "environment": o.environment, "role": o.role})
        yield info
        yield GaugeMetricFamily(
            "mcpgov_gateway_bundle_version", "Version of the bundle enforced", verified.version
        )
        yield GaugeMetricFamily(
            "mcpgov_gateway_bundle_age_seconds",
            "Seconds since the enforced bundle was issued",
            now - bundle.issued_at.timestamp(),
        )
        yield GaugeMetricFamily(
            "mcpgov_gateway_bundle_expires_in_seconds",
            "Seconds until the enforced bundle expires (negative: expired, every call is refused)",
            bundle.expires_at.timestamp() - now,
        )
        yield CounterMetricFamily(
            "mcpgov_gateway_bundles_rejected",
            "Bundles that failed verification and were never used",
            g.bundles.rejected,
        )
        events, nbytes = spool_backlog(g)
        yield GaugeMetricFamily(
            "mcpgov_gateway_spool_backlog_events",
            "Audit events spooled but not yet acknowledged by the portal",
            events,
        )
        yield GaugeMetricFamily(
            "mcpgov_gateway_spool_backlog_bytes", "Bytes of spooled audit events not yet acknowledged", nbytes
        )
        failures = g.shipper.failures if g.shipper is not None else 0
        yield GaugeMetricFamily(
            "mcpgov_gateway_shipper_failures", "Consecutive failed attempts to ship audit events", failures
        )
        sessions = GaugeMetricFamily(
            "mcpgov_gateway_sessions", "Sessions of this gateway by state", labels=["state"]
        )
        counts: dict[str, int] = {}
        for sess in list(g.sessions.values()):
            state = str(sess.state.state)
            counts[state] = counts.get(state, 0) + 1
        for state, n in sorted(counts.items()):
            sessions.add_metric([state], n)
        yield sessions


def spool_backlog(gateway: Gateway) -> tuple[int, int]:
    """(events, bytes) spooled and not acknowledged by the portal; without a portal, nothing is owed.

    Cheap: a stat and the small cursor file per spool; only a spool this gateway does not hold (left
    behind by an earlier run) is read to count its events.
    """
    from mcpgov.audit import Cursor, read_events

    if gateway.portal is None:
        return 0, 0
    directory = Path(gateway.options.spool_dir)
    live = {s.spool.session_id: s.spool for s in list(gateway.sessions.values())}
    events = nbytes = 0
    for path in directory.glob("*.jsonl"):
        spool = live.get(path.stem)
        try:
            # a live spool is preallocated past its data: its writer knows where the data ends
            size = spool.end if spool is not None else path.stat().st_size
        except FileNotFoundError:
            continue
        cursor = Cursor.load(directory / f"{path.stem}.ack")
        if size <= cursor.offset:
            continue
        if spool is not None:
            events += max(spool.seq - cursor.seq, 0)
        else:  # left behind (a killed gateway's may end in preallocated NUL bytes): read to its data's end
            backlog, size = read_events(path, start_offset=cursor.offset)
            events += len(backlog)
        nbytes += size - cursor.offset
    return events, nbytes
