"""The chat example (``examples/chat``): its protocol, then its page in a real headless Chromium.

The browser tests drive Debian's ``/usr/bin/chromium`` with Playwright's async API (Playwright's own
browser download is not needed). Without chromium or playwright they are skipped, or fail when
``AIOHTTP_WSAPP_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpClient, AiohttpServer
from redis_server import RedisServer
from support import BROWSER_TIMEOUT, within

from aiohttp_wsapp import WebSocketApp
from aiohttp_wsapp.history import read_envelope

if TYPE_CHECKING:
    from playwright.async_api import Browser, Locator, Page

CHAT_SERVER = Path(__file__).resolve().parents[1] / "examples" / "chat" / "server.py"


TIMEOUT = BROWSER_TIMEOUT


def _load_example() -> ModuleType:
    """Import the example, which is a script, not a package."""
    spec = importlib.util.spec_from_file_location("chat_example_server", CHAT_SERVER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_example = _load_example()
make_app: Callable[[str | None], web.Application] = _example.make_app
ROOMS: web.AppKey[WebSocketApp] = _example.ROOMS


async def event(ws: aiohttp.ClientWebSocketResponse) -> Any:
    """The next event ``ws`` gets: the data of a room's broadcast (in the history's envelope),
    or a message to this connection only."""
    frame = await ws.receive_str(timeout=TIMEOUT)
    try:
        _, _, data = read_envelope(frame)
    except ValueError:
        return json.loads(frame)
    return json.loads(data)


def presence(count: int) -> dict[str, object]:
    """The message that tells the room how many are in it."""
    return {"type": "presence", "count": count}


COUNTED_WITHIN = 1.0
"""SPEC §5: with a Redis broker, a join or a leave counts in every process within a second."""


async def counted(rooms: WebSocketApp, room: str, expected: int, *, since: float) -> None:
    """Wait until ``rooms`` counts ``expected`` in ``room``; fail if that takes longer than
    :data:`COUNTED_WITHIN`, with the suite's proportional margin, after ``since`` (the loop's
    time of the join or leave: a loaded machine may delay the count's write and the test alike)."""
    loop = asyncio.get_running_loop()
    deadline = since + within(COUNTED_WITHIN)
    while (count := await rooms.count(room)) != expected:
        assert loop.time() < deadline, f"counted {count} in {room}, not {expected}"
        await asyncio.sleep(0.01)  # nothing to await: the count lives in Redis


# --- the protocol, with aiohttp's client ----------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/ws/lobby",
        "/ws/lobby?name=",
        "/ws/lobby?name=%20%20",
        "/ws/lobby?name=" + "x" * 33,
        "/ws/lobby?name=%3Cscript%3E",
        "/ws/?name=alice",
        "/ws/two%20words?name=alice",
    ],
)
async def test_bad_name_or_room_is_refused_with_400(
    aiohttp_client: AiohttpClient, path: str
) -> None:
    client = await aiohttp_client(make_app(None))
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(path)
    assert refused.value.status == 400


async def test_room_members_see_joins_messages_and_leaves(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_app(None))
    alice = await client.ws_connect("/ws/lobby?name=alice")
    assert await event(alice) == {"type": "join", "name": "alice"}
    assert await event(alice) == presence(1)
    bob = await client.ws_connect("/ws/lobby?name=bob")
    for member in (bob, alice):
        assert await event(member) == {"type": "join", "name": "bob"}
        assert await event(member) == presence(2)

    await alice.send_json({"type": "message", "text": "hi bob"})
    said = {"type": "message", "name": "alice", "text": "hi bob"}
    assert await event(bob) == said
    assert await event(alice) == said

    await bob.close()
    assert await event(alice) == {"type": "leave", "name": "bob"}
    assert await event(alice) == presence(1)
    await alice.close()


async def test_malformed_message_gets_an_error_and_the_connection_stays(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(make_app(None))
    alice = await client.ws_connect("/ws/lobby?name=alice")
    await event(alice)  # her own join notice
    await event(alice)  # the room's count
    await alice.send_str("not json")
    assert (await event(alice))["type"] == "error"
    await alice.send_json({"type": "message", "text": "still here"})
    assert (await event(alice))["text"] == "still here"
    await alice.close()


async def test_rooms_are_shared_across_processes_through_redis(
    redis_server: RedisServer, aiohttp_client: AiohttpClient
) -> None:
    redis_url = redis_server.url
    # Two servers that share nothing but Redis, as two processes started with --redis would.
    first = await aiohttp_client(make_app(redis_url))
    second = await aiohttp_client(make_app(redis_url))
    loop = asyncio.get_running_loop()
    joined = loop.time()
    alice = await first.ws_connect("/ws/lobby?name=alice")
    assert await event(alice) == {"type": "join", "name": "alice"}
    assert await event(alice) == presence(1)
    # A join counts in every process within a second: then the second server counts alice.
    await counted(second.app[ROOMS], "lobby", 1, since=joined)
    bob = await second.ws_connect("/ws/lobby?name=bob")
    for member in (bob, alice):
        assert await event(member) == {"type": "join", "name": "bob"}
        assert await event(member) == presence(2)

    await bob.send_json({"type": "message", "text": "hi from the other process"})
    said = {"type": "message", "name": "bob", "text": "hi from the other process"}
    assert await event(alice) == said
    await bob.close()
    assert await event(alice) == {"type": "leave", "name": "bob"}
    assert await event(alice) == presence(1)
    await alice.close()


# --- the page, in headless Chromium ------------------------------------------------------------


@pytest.fixture
async def chat_server(aiohttp_server: AiohttpServer) -> TestServer:
    """The chat example on a real loopback port."""
    return await aiohttp_server(make_app(None))


def _items(page: Page, text: str) -> Locator:
    """The entries of the page's message list that contain ``text``."""
    return page.locator("#messages li", has_text=text)


async def _join(browser: Browser, server: TestServer, name: str, room: str) -> Page:
    """Open the page, join ``room`` as ``name`` through the form, and wait until in the room."""
    from playwright.async_api import expect

    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT * 1000)
    await page.goto(str(server.make_url("/")))
    await page.get_by_label("Name", exact=True).fill(name)
    await page.get_by_label("Room", exact=True).fill(room)
    await page.get_by_role("button", name="Join").click()
    # One's own join notice comes after the server has put the connection in the room.
    await expect(_items(page, f"{name} joined")).to_have_count(1)
    return page


async def _say(page: Page, text: str) -> None:
    """Type ``text`` into the page's message box and send it with Enter."""
    await page.get_by_label("Message").fill(text)
    await page.get_by_label("Message").press("Enter")


async def test_message_reaches_its_room_only(chat_server: TestServer, browser: Browser) -> None:
    from playwright.async_api import expect

    alice = await _join(browser, chat_server, "alice", "A")
    bob = await _join(browser, chat_server, "bob", "A")
    carol = await _join(browser, chat_server, "carol", "B")
    await expect(_items(alice, "bob joined")).to_have_count(1)

    greeting = "hello <b>room</b> A & all"
    await _say(alice, greeting)
    said = bob.locator("#messages li.message", has_text="alice")
    await expect(said.locator(".text")).to_have_text(greeting)
    # Shown as text: the markup in the message did not become an element.
    await expect(bob.locator("#messages b")).to_have_count(0)

    # Carol's own message, echoed to her after Alice's was broadcast, is the barrier: had
    # Alice's message gone to room B, Carol would have received it first.
    await _say(carol, "hello room B")
    await expect(_items(carol, "hello room B")).to_have_count(1)
    await expect(_items(carol, "room</b> A")).to_have_count(0)
    await expect(_items(carol, "bob joined")).to_have_count(0)


async def test_closing_a_page_shows_a_leave_notice(
    chat_server: TestServer, browser: Browser
) -> None:
    from playwright.async_api import expect

    alice = await _join(browser, chat_server, "alice", "A")
    bob = await _join(browser, chat_server, "bob", "A")
    await bob.close()
    await expect(_items(alice, "bob left")).to_have_count(1)


async def test_the_page_shows_how_many_are_in_the_room(
    chat_server: TestServer, browser: Browser
) -> None:
    from playwright.async_api import expect

    alice = await _join(browser, chat_server, "alice", "A")
    await expect(alice.locator("#presence")).to_have_text("1 person in the room")
    bob = await _join(browser, chat_server, "bob", "A")
    carol = await _join(browser, chat_server, "carol", "B")
    await expect(alice.locator("#presence")).to_have_text("2 people in the room")
    await expect(bob.locator("#presence")).to_have_text("2 people in the room")
    await expect(carol.locator("#presence")).to_have_text("1 person in the room")
    await bob.close()
    await expect(alice.locator("#presence")).to_have_text("1 person in the room")


async def test_page_reconnects_after_a_server_restart(
    aiohttp_server: AiohttpServer, browser: Browser
) -> None:
    from playwright.async_api import expect

    first = await aiohttp_server(make_app(None))
    alice = await _join(browser, first, "alice", "A")
    status = alice.locator("#status")

    port = first.port  # close() forgets it
    await first.close()
    await expect(status).to_have_attribute("data-state", "reconnecting")
    await aiohttp_server(make_app(None), port=port)
    await expect(status).to_have_attribute("data-state", "connected")

    # The new connection is in the room again: what Alice says comes back to her.
    await _say(alice, "back again")
    await expect(_items(alice, "back again")).to_have_count(1)
