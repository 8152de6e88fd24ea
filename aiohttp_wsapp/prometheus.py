"""An endpoint's figures as Prometheus metrics, read from ``wsapp.stats()`` at scrape time.

Install the extra ``aiohttp-wsapp[prometheus]`` (it brings ``prometheus_client``). Nothing here
runs per message: the endpoint counts with plain integers (:class:`~aiohttp_wsapp.Stats`), and
:class:`StatsCollector` turns one snapshot into metrics each time Prometheus scrapes.

The metrics, named by Prometheus' conventions (``_total`` for counters, ``_bytes`` for a unit,
labels for codes, causes and error strings):

=================================================  ============================================
``aiohttp_wsapp_connections_open``                 gauge: connections open now
``aiohttp_wsapp_handshakes_accepted_total``        handshakes answered with 101
``aiohttp_wsapp_handshakes_refused_total``         refused handshakes, by ``error`` string
``aiohttp_wsapp_connections_finished_total``       finished connections, by close ``code``
``aiohttp_wsapp_connections_dropped_total``        connections dropped, by ``cause``
``aiohttp_wsapp_messages_received_total``          messages received and dispatched
``aiohttp_wsapp_messages_sent_total``              messages sent (a broadcast once per peer)
``aiohttp_wsapp_received_bytes_total``             payload bytes received
``aiohttp_wsapp_sent_bytes_total``                 payload bytes sent, before compression
``aiohttp_wsapp_broadcasts_total``                 calls of ``broadcast`` in this process
``aiohttp_wsapp_broadcast_frames_total``           frames broadcasts put on sockets here
``aiohttp_wsapp_broker_published_total``           broadcasts handed to the broker
``aiohttp_wsapp_broker_received_total``            broadcasts received from the broker
``aiohttp_wsapp_broker_errors_total``              broker failures
``aiohttp_wsapp_broker_reconnects_total``          broker reconnections
=================================================  ============================================

The ``broker_`` metrics are absent for an endpoint without a broker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Protocol

from aiohttp import hdrs, web
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from .stats import Stats

__all__ = ["StatsCollector", "StatsSource", "metrics_handler", "setup_metrics"]

PREFIX = "aiohttp_wsapp"


class StatsSource(Protocol):
    """Anything with a ``stats()`` method, such as :class:`~aiohttp_wsapp.WebSocketApp`."""

    def stats(self) -> Stats:
        """Return a snapshot of the figures."""


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


def _labelled_counter(
    name: str, documentation: str, label: str, counts: dict[str, int] | dict[int, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=[label])
    for key, count in counts.items():
        family.add_metric([str(key)], count)
    return family


class StatsCollector:
    """A Prometheus collector of one endpoint's figures: register it, and every scrape reads
    ``source.stats()`` once.

    ``registry.register(StatsCollector(wsapp))`` adds the endpoint's metrics to those that
    ``registry`` (by default ``prometheus_client.REGISTRY``) already exposes. One endpoint per
    registry: two would give the same metric names twice, which the registry refuses.
    """

    def __init__(self, source: StatsSource) -> None:
        """Collect the figures of ``source``, a :class:`~aiohttp_wsapp.WebSocketApp`."""
        self.source = source

    def describe(self) -> list[Metric]:
        """The metrics without their values, so that registering does not take a snapshot."""
        return list(self._metrics(None))

    def collect(self) -> Iterator[Metric]:
        """The metrics with the values of one snapshot taken now."""
        return self._metrics(self.source.stats())

    def _metrics(self, stats: Stats | None) -> Iterator[Metric]:
        empty = stats is None
        if stats is None:
            stats = _EMPTY
        yield GaugeMetricFamily(
            f"{PREFIX}_connections_open", "Connections open now.", value=stats.connections_open
        )
        yield _counter(
            "handshakes_accepted", "Handshakes answered with 101.", stats.handshakes_accepted
        )
        yield _labelled_counter(
            "handshakes_refused",
            "Handshakes refused, by error string.",
            "error",
            stats.handshakes_refused,
        )
        yield _labelled_counter(
            "connections_finished",
            "Connections that finished, by close code (1006: no closing handshake).",
            "code",
            stats.finished,
        )
        yield _labelled_counter(
            "connections_dropped", "Connections dropped, by cause.", "cause", stats.dropped
        )
        yield _counter(
            "messages_received", "Messages received and dispatched.", stats.messages_received
        )
        yield _counter(
            "messages_sent", "Messages sent; a broadcast counts once per peer.", stats.messages_sent
        )
        yield _counter(
            "received_bytes", "Payload bytes of the messages received.", stats.bytes_received
        )
        yield _counter(
            "sent_bytes",
            "Payload bytes of the messages sent, before compression.",
            stats.bytes_sent,
        )
        yield _counter("broadcasts", "Calls of broadcast in this process.", stats.broadcasts)
        yield _counter(
            "broadcast_frames",
            "Frames that broadcasts put on sockets in this process.",
            stats.broadcast_frames,
        )
        yield from _broker_metrics(stats, describe=empty)


def _broker_metrics(stats: Stats, *, describe: bool) -> Iterator[Metric]:
    published, received = stats.broker_published, stats.broker_received
    errors, reconnects = stats.broker_errors, stats.broker_reconnects
    if published is None or received is None or errors is None or reconnects is None:
        if not describe:
            return  # no broker: no broker metrics
        published = received = errors = reconnects = 0
    yield _counter("broker_published", "Broadcasts handed to the broker.", published)
    yield _counter("broker_received", "Broadcasts received from the broker.", received)
    yield _counter("broker_errors", "Broker failures: failed publishes, lost connections.", errors)
    yield _counter("broker_reconnects", "Broker reconnections after a lost connection.", reconnects)


_EMPTY = Stats(
    connections_open=0,
    handshakes_accepted=0,
    handshakes_refused={},
    finished={},
    messages_received=0,
    messages_sent=0,
    bytes_received=0,
    bytes_sent=0,
    broadcasts=0,
    broadcast_frames=0,
    dropped={},
    broker_published=None,
    broker_received=None,
    broker_errors=None,
    broker_reconnects=None,
)


MetricsHandler = Callable[[web.Request], Awaitable[web.Response]]
"""An aiohttp handler that answers with the metrics of a registry."""


def metrics_handler(registry: CollectorRegistry = REGISTRY) -> MetricsHandler:
    """Return an aiohttp handler that answers with every metric of ``registry``.

    The format is the one the scraper asks for in its ``Accept`` header: OpenMetrics for
    Prometheus, the classic text format otherwise (``curl``), as ``prometheus_client``'s own
    HTTP server does. The scrape runs on the event loop: it takes one snapshot of each endpoint,
    a few microseconds per metric.
    """

    async def metrics(request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get(hdrs.ACCEPT, ""))
        return web.Response(body=encode(registry), headers={hdrs.CONTENT_TYPE: content_type})

    return metrics


def setup_metrics(
    app: web.Application,
    source: StatsSource,
    *,
    path: str = "/metrics",
    registry: CollectorRegistry = REGISTRY,
) -> StatsCollector:
    """Serve ``registry``'s metrics at ``path`` of ``app``, ``source``'s figures among them.

    The collector is registered while ``app`` runs (from its startup to its cleanup), so
    that an application made again in the same process (tests, a reload) registers anew rather
    than clashing with the collector of the last one. Returns the collector.

    Where the application already serves ``/metrics``, register the collector instead:
    ``registry.register(StatsCollector(wsapp))``.
    """
    collector = StatsCollector(source)

    async def registered(app: web.Application) -> AsyncIterator[None]:
        registry.register(collector)
        yield
        registry.unregister(collector)

    app.router.add_get(path, metrics_handler(registry))
    app.cleanup_ctx.append(registered)
    return collector
