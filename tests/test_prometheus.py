"""``aiohttp_wsapp.prometheus``: the figures of a running endpoint, scraped over HTTP.

Every test serves a real application with ``setup_metrics``, talks to its endpoint, scrapes
``/metrics`` with an HTTP client, and parses the answer with ``prometheus_client``'s own parsers
(the classic text format, and OpenMetrics when asked for).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from support import TIMEOUT, Recorder, require_module

from aiohttp_wsapp import WebSocketApp

require_module("prometheus_client", "pip install 'aiohttp-wsapp[prometheus]'")

from prometheus_client import REGISTRY, CollectorRegistry  # noqa: E402
from prometheus_client.openmetrics.parser import (  # noqa: E402
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from aiohttp_wsapp.prometheus import StatsCollector, setup_metrics  # noqa: E402

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Sample name and sorted labels → value."""

Start = Callable[..., Awaitable[tuple[WebSocketApp, TestClient[Any, Any]]]]

COUNTERS = (
    "handshakes_accepted",
    "handshakes_refused",
    "connections_finished",
    "connections_dropped",
    "messages_received",
    "messages_sent",
    "received_bytes",
    "sent_bytes",
    "broadcasts",
    "broadcast_frames",
)


@pytest.fixture
def start(aiohttp_client: AiohttpClient, recorder: Recorder) -> Start:
    """Serve an echoing endpoint at ``/ws`` and its metrics at ``/metrics`` of one application."""
    recorder.echo = True

    async def start(
        registry: CollectorRegistry | None = None,
    ) -> tuple[WebSocketApp, TestClient[Any, Any]]:
        wsapp = WebSocketApp(recorder.on_establish)
        app = web.Application()
        app.add_subapp("/ws", wsapp.to_app())
        setup_metrics(app, wsapp, registry=CollectorRegistry() if registry is None else registry)
        return wsapp, await aiohttp_client(app)

    return start


async def scrape(client: TestClient[Any, Any], accept: str | None = None) -> tuple[str, str]:
    """GET ``/metrics``; return its content type and its text."""
    headers = {} if accept is None else {"Accept": accept}
    response = await client.get("/metrics", headers=headers)
    assert response.status == 200
    return response.headers["Content-Type"], await response.text()


def samples(text: str, parse: Callable[[str], Any] = text_string_to_metric_families) -> Samples:
    found: Samples = {}
    for family in parse(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in found, key
            found[key] = sample.value
    return found


def types(
    text: str, parse: Callable[[str], Any] = text_string_to_metric_families
) -> dict[str, str]:
    return {family.name: family.type for family in parse(text)}


async def test_scraped_metrics_are_the_stats_of_the_running_endpoint(
    start: Start, recorder: Recorder
) -> None:
    wsapp, client = await start()
    async with client.ws_connect("/ws") as ws, client.ws_connect("/ws"):
        await ws.send_str("héllo")
        assert await ws.receive_str(timeout=TIMEOUT) == "héllo"
        await wsapp.broadcast(b"\x00\x01")
        assert await ws.receive_bytes(timeout=TIMEOUT) == b"\x00\x01"
        await recorder.connection()
        await recorder.connection()
        content_type, text = await scrape(client)
    assert content_type.startswith("text/plain; version=")
    for _ in range(2):
        await recorder.finish()
    scraped = samples(text)
    assert scraped[("aiohttp_wsapp_connections_open", ())] == 2
    assert scraped[("aiohttp_wsapp_handshakes_accepted_total", ())] == 2
    assert scraped[("aiohttp_wsapp_messages_received_total", ())] == 1
    assert scraped[("aiohttp_wsapp_received_bytes_total", ())] == 6
    assert scraped[("aiohttp_wsapp_messages_sent_total", ())] == 3  # one echo, a broadcast to 2
    assert scraped[("aiohttp_wsapp_sent_bytes_total", ())] == 6 + 2 * 2
    assert scraped[("aiohttp_wsapp_broadcasts_total", ())] == 1
    assert scraped[("aiohttp_wsapp_broadcast_frames_total", ())] == 2
    refused = "aiohttp_wsapp_handshakes_refused_total"
    assert scraped[(refused, (("error", "too many connections"),))] == 0
    dropped = "aiohttp_wsapp_connections_dropped_total"
    assert scraped[(dropped, (("cause", "send buffer overflow"),))] == 0
    # Then the next scrape shows what happened since: both finished, one was refused.
    assert (await client.get("/ws")).status == 400
    later = samples((await scrape(client))[1])
    assert later[("aiohttp_wsapp_connections_open", ())] == 0
    finished = "aiohttp_wsapp_connections_finished_total"
    assert later[(finished, (("code", "1000"),))] == 2
    assert later[(refused, (("error", "invalid request"),))] == 1


async def test_every_figure_of_the_stats_is_a_metric_of_the_right_type(start: Start) -> None:
    wsapp, client = await start()
    _, text = await scrape(client)
    found = types(text)
    assert found == {
        "aiohttp_wsapp_connections_open": "gauge",
        **{f"aiohttp_wsapp_{name}": "counter" for name in COUNTERS},
    }
    scraped = samples(text)
    stats = wsapp.stats()
    labelled = {
        "handshakes_refused": ("error", stats.handshakes_refused),
        "connections_dropped": ("cause", stats.dropped),
    }
    for name, (label, counts) in labelled.items():
        for key, count in counts.items():
            assert scraped[(f"aiohttp_wsapp_{name}_total", ((label, str(key)),))] == count


async def test_openmetrics_when_the_scraper_asks_for_it(start: Start, recorder: Recorder) -> None:
    _, client = await start()
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("hi")
        await ws.receive_str(timeout=TIMEOUT)
    await recorder.finish()
    content_type, text = await scrape(client, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")
    scraped = samples(text, parse_openmetrics)
    assert scraped[("aiohttp_wsapp_messages_received_total", ())] == 1
    assert scraped[("aiohttp_wsapp_connections_finished_total", (("code", "1000"),))] == 1
    assert types(text, parse_openmetrics)["aiohttp_wsapp_messages_received"] == "counter"


async def test_the_default_registry_holds_the_collector_only_while_the_app_runs(
    start: Start,
) -> None:
    name = "aiohttp_wsapp_connections_open"
    assert REGISTRY.get_sample_value(name) is None
    _, client = await start(REGISTRY)
    assert REGISTRY.get_sample_value(name) == 0
    _, text = await scrape(client)
    assert ("process_cpu_seconds_total", ()) in samples(text)  # prometheus_client's own too
    await client.close()
    assert REGISTRY.get_sample_value(name) is None
    _, again = await start(REGISTRY)  # a new application registers anew, without a clash
    assert REGISTRY.get_sample_value(name) == 0
    await again.close()


async def test_one_registry_takes_one_endpoint(recorder: Recorder) -> None:
    registry = CollectorRegistry()
    registry.register(StatsCollector(WebSocketApp(recorder.on_establish)))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(StatsCollector(WebSocketApp(recorder.on_establish)))
