"""The chat example's recovery in headless Chromium: two server processes behind one Redis and
one load balancer; the process a page is connected to is killed while another page keeps
talking; the page, reconnected to the other process, shows every message once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from redis_server import RedisServer, ServerProcess, free_port
from support import BROWSER_TIMEOUT

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHAT_SERVER = Path(__file__).resolve().parents[1] / "examples" / "chat" / "server.py"
TIMEOUT = BROWSER_TIMEOUT


class ChatProcess(ServerProcess):
    """``examples/chat/server.py --redis URL`` in its own OS process."""

    def __init__(self, redis_url: str) -> None:
        super().__init__()
        self.redis_url = redis_url

    async def start(self) -> None:
        """Start it and wait until it accepts connections."""
        await self.spawn(
            sys.executable,
            str(CHAT_SERVER),
            "--port",
            str(self.port),
            "--redis",
            self.redis_url,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        if not await self.serves(self.accepts_connections):
            await self.stop()
            raise RuntimeError(f"the chat server did not start on port {self.port}")


class LoadBalancer:
    """A TCP proxy in front of the chat processes: each new connection goes to the first
    backend of :attr:`backends` that accepts it (none: the connection is closed at once)."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.served: list[int] = []
        """The backend port of every connection, in order."""
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for port in list(self.backends):
            try:
                backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self.served.append(port)
            pipes = [
                asyncio.ensure_future(_pipe(reader, backend_writer)),
                asyncio.ensure_future(_pipe(backend_reader, writer)),
            ]
            self._pipes.update(pipes)
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._pipes.difference_update(pipes)
            _close(backend_writer)
            break
        _close(writer)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()


@pytest.fixture
async def chat_processes(redis_server: RedisServer) -> AsyncIterator[list[ChatProcess]]:
    processes = [ChatProcess(redis_server.url), ChatProcess(redis_server.url)]
    try:
        await asyncio.gather(*(process.start() for process in processes))
        yield processes
    finally:
        await asyncio.gather(*(process.stop() for process in processes))


async def join(browser: Browser, url: str, name: str, room: str) -> Page:
    """Open the page at ``url`` as ``name`` in ``room``, and wait until in the room."""
    from playwright.async_api import expect

    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT * 1000)
    await page.goto(f"{url}?name={name}&room={room}")  # joins at once
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    await expect(page.locator("#messages li.join", has_text=f"{name} joined")).to_have_count(1)
    return page


async def say(page: Page, text: str) -> None:
    await page.get_by_label("Message").fill(text)
    await page.get_by_label("Message").press("Enter")


async def test_a_page_whose_server_died_shows_every_message_once_in_order(
    browser: Browser, chat_processes: list[ChatProcess]
) -> None:
    from playwright.async_api import expect

    first, second = chat_processes
    balancer = LoadBalancer([first.port])
    await balancer.start()
    try:
        alice = await join(browser, balancer.url, "alice", "room")
        bob = await join(browser, second.url, "bob", "room")
        assert set(balancer.served) == {first.port}  # the page, its files, its socket
        alice_texts = alice.locator("#messages li.message .text")
        bob_texts = bob.locator("#messages li.message .text")

        await say(bob, "before 1")
        await say(alice, "before 2")
        await expect(alice_texts).to_have_text(["before 1", "before 2"])

        await first.kill()
        await expect(alice.locator("#status")).to_have_attribute("data-state", "reconnecting")
        missed = [f"while away {n}" for n in range(5)]
        for text in missed:
            await say(bob, text)
        await expect(bob_texts).to_have_text(["before 1", "before 2", *missed])

        balancer.backends = [first.port, second.port]  # the balancer notices the dead process
        await expect(alice.locator("#status")).to_have_attribute("data-state", "connected")
        assert balancer.served[-1] == second.port
        await say(bob, "after")
        await say(alice, "back")
        expected = ["before 1", "before 2", *missed, "after", "back"]
        await expect(alice_texts).to_have_text(expected)
        await expect(bob_texts).to_have_text(expected)
        await expect(alice.locator("#messages li.gap")).to_have_count(0)
    finally:
        await balancer.stop()
