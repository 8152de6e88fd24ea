"""Every code block of the documentation and of README.md runs, and the docs build cleanly.

A Python block runs the way a reader uses it: the blocks of one page are executed in order in one
namespace, so each block sees what the blocks above it defined. Then the check registered for the
block under its name (``:name:`` in ``docs/``, ``readme-<heading>`` in README.md) drives what it
built: the application it gave to ``web.run_app`` is served on a free port and talked to, the
functions it defined are called. Blocks run with ``__name__ == "__main__"``, with ``web.run_app``
and ``asyncio.run`` replaced by recorders, so their ``if __name__ == "__main__":`` lines run too.

A block that defines ``test_*`` functions is a test module: it is written to a directory with the
page's other blocks that carry a file name (``:caption: chat.py``), and run by pytest there.

Blocks in another language (shell, nginx, JavaScript, Perl, TOML) are not executed; a TOML block
captioned ``pyproject.toml`` configures the pytest run of the tests on its page.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib
import importlib.util
import inspect
import itertools
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer
from support import TIMEOUT, require_module, require_program

import aiohttp_wsapp
from aiohttp_wsapp import WSAPP_KEY, WebSocketApp

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"

PYTHON = "python"
NOT_PYTHON = {"sh", "console", "nginx", "javascript", "perl", "toml", "text", "ini", "yaml"}
"""The other languages a code block may be in; none of them is executed."""

PYTEST_CONFIG = """\
[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
"""
"""The pytest configuration of a test block whose page gives none."""


# -- reading the blocks -------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One code block of a page."""

    path: Path
    line: int
    """The line of the block's first line of code in ``path``."""
    name: str
    language: str
    caption: str | None
    code: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} ({self.name})"

    @property
    def is_python(self) -> bool:
        return self.language == PYTHON

    @property
    def tests(self) -> list[str]:
        """The names of the ``test_*`` functions this block defines."""
        if not self.is_python:
            return []
        return [
            node.name
            for node in ast.parse(self.code).body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")
        ]

    def compiled(self) -> Any:
        """The block's code object, with the line numbers of its page."""
        return compile("\n" * (self.line - 1) + self.code, str(self.path), "exec")


_DIRECTIVE = re.compile(r"^(?P<indent> *)\.\. (?P<directive>[\w:-]+)::(?P<argument>.*)$")
_OPTION = re.compile(r"^ *:(?P<option>[\w-]+):(?P<value>.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rst_blocks(path: Path) -> list[Block]:
    """The ``code-block`` directives of a reStructuredText page."""
    lines = path.read_text().splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index])
        index += 1
        if match is None or match["directive"] not in ("code-block", "code", "sourcecode"):
            continue
        indent = len(match["indent"])
        options: dict[str, str] = {}
        while index < len(lines) and (option := _OPTION.match(lines[index])):
            options[option["option"]] = option["value"].strip()
            index += 1
        body_start = index
        while index < len(lines) and (not lines[index].strip() or _indent(lines[index]) > indent):
            index += 1
        body = lines[body_start:index]
        while body and not body[0].strip():
            body.pop(0)
            body_start += 1
        language = match["argument"].strip()
        blocks.append(
            Block(
                path=path,
                line=body_start + 1,
                name=options.get("name", f"{path.stem}:{body_start + 1}"),
                language=language,
                caption=options.get("caption"),
                code=textwrap.dedent("\n".join(body)).rstrip() + "\n",
            )
        )
    return blocks


def markdown_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, named ``readme-<heading>[-n]``."""
    lines = path.read_text().splitlines()
    blocks = []
    heading = "top"
    seen: dict[str, int] = {}
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.startswith("#"):
            heading = re.sub(r"[^a-z0-9]+", "-", line.lstrip("#").strip().lower()).strip("-")
            continue
        if not line.startswith("```"):
            continue
        language = line[3:].strip()
        start = index
        while not lines[index].startswith("```"):
            index += 1
        code = "\n".join(lines[start:index]) + "\n"
        index += 1
        seen[heading] = seen.get(heading, 0) + 1
        suffix = "" if seen[heading] == 1 else f"-{seen[heading]}"
        name = f"{path.stem.lower()}-{heading}{suffix}"
        blocks.append(Block(path, start + 1, name, language, None, code))
    return blocks


def pages() -> dict[Path, list[Block]]:
    """Every page with code: README.md and the ``.rst`` files under ``docs/``."""
    found = {README: markdown_blocks(README)}
    for path in sorted(DOCS.rglob("*.rst")):
        if "_build" not in path.parts:
            found[path] = rst_blocks(path)
    return found


PAGES = pages()
BLOCKS = [block for blocks in PAGES.values() for block in blocks]
PYTHON_BLOCKS = [block for block in BLOCKS if block.is_python]


# -- running a block ----------------------------------------------------------------------------


@dataclass
class Served:
    """One call of ``web.run_app`` made by a block."""

    app: web.Application
    kwargs: dict[str, Any]


@dataclass
class Run:
    """A block that has run after the blocks above it: what its check looks at and uses."""

    block: Block
    aiohttp_client: AiohttpClient
    aiohttp_server: AiohttpServer
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    stack: contextlib.AsyncExitStack
    namespace: dict[str, Any] = field(default_factory=dict)
    served: list[Served] = field(default_factory=list)
    """The ``web.run_app`` calls of this block (not of the blocks above it)."""
    coroutines: list[str] = field(default_factory=list)
    """The names of the coroutines this block gave to ``asyncio.run``."""
    lines: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    def __getitem__(self, name: str) -> Any:
        return self.namespace[name]

    def print(self, *args: object, sep: str | None = " ", **kwargs: Any) -> None:
        """The blocks' ``print``: records each line for :meth:`printed`."""
        self.lines.put_nowait((" " if sep is None else sep).join(map(str, args)))

    async def printed(self, expected: str) -> None:
        """Wait until the block's code prints ``expected`` (after the lines before it)."""
        seen: list[str] = []
        while True:
            try:
                line = await asyncio.wait_for(self.lines.get(), TIMEOUT)
            except asyncio.TimeoutError:
                raise AssertionError(f"{expected!r} was not printed; saw {seen}") from None
            if line == expected:
                return
            seen.append(line)

    def app(self) -> web.Application:
        """The one application this block gave to ``web.run_app``."""
        assert len(self.served) == 1, f"{self.block} should call web.run_app once"
        return self.served[0].app

    async def client(self, app: web.Application | None = None) -> TestClient[Any, Any]:
        """A test client of ``app`` (by default :meth:`app`), served on a free port."""
        return await self.aiohttp_client(self.app() if app is None else app)

    def _run_app(self, app: Any, **kwargs: Any) -> None:
        if inspect.isawaitable(app):
            raise AssertionError("the docs pass an Application to web.run_app, not a coroutine")
        assert isinstance(app, web.Application)
        self.served.append(Served(app, kwargs))

    def _asyncio_run(self, coroutine: Coroutine[Any, Any, Any], **kwargs: Any) -> None:
        self.coroutines.append(getattr(coroutine, "__qualname__", repr(coroutine)))
        coroutine.close()

    def execute(self, blocks: list[Block]) -> None:
        """Execute ``blocks`` in one namespace, as the main module; record for the last one."""
        self.monkeypatch.setattr(web, "run_app", self._run_app)
        self.monkeypatch.setattr(asyncio, "run", self._asyncio_run)
        self.namespace.update(__name__="__main__", print=self.print)
        for block in blocks:
            self.served.clear()
            self.coroutines.clear()
            exec(block.compiled(), self.namespace)


CheckFunction = Callable[[Run], Awaitable[None]]


@dataclass(frozen=True)
class Check:
    """How a block is checked once it ran (or, with ``not_run``, instead of running it)."""

    function: CheckFunction | None = None
    prepare: CheckFunction | None = None
    """Runs before the page's blocks are executed: files, environment, servers."""
    covered_by: str | None = None
    """The later block on the same page whose check drives what this block defines."""
    not_run: str | None = None
    """Why this block is only compiled, not executed with its page (keep this rare)."""


CHECKS: dict[str, Check] = {}


def check(
    *names: str, prepare: CheckFunction | None = None
) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check for the blocks ``names``."""

    def register(function: CheckFunction) -> CheckFunction:
        for name in names:
            assert name not in CHECKS, f"two checks for {name}"
            CHECKS[name] = Check(function, prepare)
        return function

    return register


def covered(name: str, *, by: str) -> None:
    """Register that block ``name`` is checked by the check of the later block ``by``."""
    CHECKS[name] = Check(covered_by=by)


def not_run(name: str, *, why: str, function: CheckFunction | None = None) -> None:
    """Register a block that is compiled but not executed with its page, and why."""
    CHECKS[name] = Check(function=function, not_run=why)


def page_of(block: Block) -> list[Block]:
    return PAGES[block.path]


def runnable_blocks_up_to(block: Block) -> list[Block]:
    """The Python blocks of ``block``'s page up to ``block``, without tests and not-run blocks."""
    blocks = []
    for each in page_of(block):
        if each.is_python and not each.tests and not _is_not_run(each):
            blocks.append(each)
        if each is block:
            return blocks
    raise AssertionError(f"{block} is not on its page")


def _is_not_run(block: Block) -> bool:
    entry = CHECKS.get(block.name)
    return entry is not None and entry.not_run is not None


async def receive_close(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the server's close frame; return its close code."""
    while True:
        message = await ws.receive(TIMEOUT)
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
            return ws.close_code


async def refused_status(
    client: TestClient[Any, Any], path: str, **kwargs: Any
) -> aiohttp.WSServerHandshakeError:
    """Open a WebSocket that the server must refuse; return the error with its status."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(path, **kwargs)
    return refused.value


HANDSHAKE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}
"""The headers of a valid opening handshake, for requests made without a WebSocket client."""


async def run_pytest(run: Run) -> None:
    """Run a test block with pytest, beside the files its page defines before it."""
    block = run.block
    files: dict[str, str] = {}
    for each in page_of(block):
        if each is block:
            break
        if each.caption is not None:
            files[each.caption] = files.get(each.caption, "") + "\n\n" + each.code
    files.setdefault("pyproject.toml", PYTEST_CONFIG)
    test_file = block.caption or "test_block.py"
    files[test_file] = block.code
    for name, text in files.items():
        (run.tmp_path / name).write_text(text.lstrip())
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-W",
        "error",
        "-o",
        "asyncio_debug=true",
        "--rootdir",
        str(run.tmp_path),
        test_file,
        cwd=run.tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 90)
    report = output.decode(errors="replace")
    assert process.returncode == 0, f"{block}: pytest failed\n{report}"
    summary = report.strip().splitlines()[-1]
    assert re.match(rf"{len(block.tests)} passed in ", summary), f"{block}: {summary}\n{report}"


# -- the checks: README.md ----------------------------------------------------------------------


@check("readme-synopsis")
async def _readme_synopsis(run: Run) -> None:
    client = await run.client()
    async with client.ws_connect("/websocket") as ws:
        await ws.send_str("hi")
        assert await ws.receive_str() == "hi"
    await run.printed("Bye!!")
    response = await client.get("/websocket")  # no WebSocket handshake: on_error answers
    assert response.status == 500
    assert await response.text() == "Error: invalid request"


@check("readme-how-it-works")
async def _readme_how_it_works(run: Run) -> None:
    client = await run.client(aiohttp_wsapp.create_app(run["on_establish"]))
    async with client.ws_connect("/") as ws:
        assert await ws.receive_json() == {"hello": "127.0.0.1"}
        await ws.send_bytes(b"\x01")
        assert await ws.receive_bytes() == b"\x01"
    await run.printed("closed with 1000 ")


@check("readme-broadcast-and-groups")
async def _readme_broadcast(run: Run) -> None:
    app = aiohttp_wsapp.create_app(run["on_establish"])
    client = await run.client(app)
    wsapp = app[WSAPP_KEY]
    async with client.ws_connect("/kitchen") as first, client.ws_connect("/") as lobby:
        # on_establish joins before anything else: listed in connections, they are in their rooms.
        await wsapp.broadcast("ready")
        assert await first.receive_str() == "ready"
        assert await lobby.receive_str() == "ready"
        async with client.ws_connect("/kitchen") as second:
            assert await first.receive_str() == "someone joined kitchen"
            await wsapp.broadcast("end")
            assert await lobby.receive_str() == "end"  # the lobby did not hear of the kitchen
            assert await second.receive_str() == "end"  # nor did the one who joined
            assert await first.receive_str() == "end"


@check("readme-scaling-out-with-redis", prepare=lambda run: _start_redis(run))
async def _readme_redis(run: Run) -> None:
    from aiohttp_wsapp.redis import RedisBroker

    broker = run["app"][WSAPP_KEY]._broker
    assert isinstance(broker, RedisBroker)
    assert broker.url == "redis://localhost:6379/0"
    # The same endpoint in two "processes" sharing the test's Redis: a broadcast reaches both.
    url = os.environ["REDIS_URL"]
    apps = [aiohttp_wsapp.create_app(run["on_establish"], broker=RedisBroker(url)) for _ in "ab"]
    one, two = [await run.client(app) for app in apps]
    async with one.ws_connect("/") as first, two.ws_connect("/") as second:
        await apps[0][WSAPP_KEY].broadcast("extra!", group="news")
        assert await first.receive_str() == "extra!"
        assert await second.receive_str() == "extra!"
    for client in (one, two):
        await client.close()  # stops the brokers while their Redis still runs


# -- the checks: index and tutorial ------------------------------------------------------------


async def _echoes(client: TestClient[Any, Any], path: str) -> None:
    async with client.ws_connect(path) as ws:
        await ws.send_str("hello")
        assert await ws.receive_str() == "hello"
        await ws.send_bytes(b"\x00\x01")
        assert await ws.receive_bytes() == b"\x00\x01"


@check("index-echo")
async def _index_echo(run: Run) -> None:
    await _echoes(await run.client(), "/ws")


@check("tutorial-echo")
async def _tutorial_echo(run: Run) -> None:
    assert run.served[0].kwargs == {"host": "127.0.0.1", "port": 8080}
    client = await run.client()
    await _echoes(client, "/echo")
    await run.printed("connected: 127.0.0.1")
    await run.printed("finished: 1000")
    await _echoes(client, "/echo/any/path/below")


@check("tutorial-client")
async def _tutorial_client(run: Run) -> None:
    assert run.coroutines == ["main"]
    client = await run.client(run["app"])  # the echo server of the block above
    await run["main"](str(client.make_url("/echo")))
    await run.printed("hello")
    await run.printed(r"b'\x00\x01'")


covered("tutorial-chat-handshake", by="tutorial-chat-app")
covered("tutorial-chat-establish", by="tutorial-chat-app")


@check("tutorial-chat-app")
async def _tutorial_chat(run: Run) -> None:
    client = await run.client()
    chat: dict[str, Any] = {"protocols": ["chat.v1"]}
    async with (
        client.ws_connect("/chat/kitchen?name=ann", **chat) as ann,
        client.ws_connect("/chat?name=cy", **chat) as cy,
    ):
        assert ann.protocol == "chat.v1"
        assert await ann.receive_json() == {"joined": "ann"}
        assert await cy.receive_json() == {"joined": "cy"}
        async with client.ws_connect("/chat/kitchen?name=bob", **chat) as bob:
            assert await ann.receive_json() == {"joined": "bob"}
            assert await bob.receive_json() == {"joined": "bob"}
            await bob.send_str("hi")
            assert await ann.receive_json() == {"from": "bob", "text": "hi"}
            assert await bob.receive_json() == {"from": "bob", "text": "hi"}
            await bob.send_bytes(b"hi")
            assert await receive_close(bob) == WSCloseCode.UNSUPPORTED_DATA
        assert await ann.receive_json() == {"left": "bob"}
        await cy.send_str("anyone?")  # the lobby heard nothing from the kitchen
        assert await cy.receive_json() == {"from": "cy", "text": "anyone?"}
    assert (await refused_status(client, "/chat/kitchen", **chat)).status == 400
    async with client.ws_connect("/chat/hall?name=dan", protocols=["chat.v2", "chat.v1"]) as dan:
        assert dan.protocol == "chat.v1"
        assert await dan.receive_json() == {"joined": "dan"}
    async with client.ws_connect("/chat/hall?name=eve") as no_protocol:  # offers none: accepted
        assert no_protocol.protocol is None
        assert await no_protocol.receive_json() == {"joined": "eve"}
    # Offering only subprotocols the server does not speak is refused, before the name check.
    refused = await refused_status(client, "/chat/hall?name=fay", protocols=["chat.v2"])
    assert refused.status == 400
    response = await client.get("/chat/hall", headers={**HANDSHAKE, "Sec-WebSocket-Protocol": "v2"})
    assert response.status == 400
    assert "chat.v1" in await response.text()


# -- the checks: how-tos ------------------------------------------------------------------------


@check("auth-handshake")
async def _auth_handshake(run: Run) -> None:
    client = await run.client()
    refused = await refused_status(client, "/ws")
    assert refused.status == 401
    assert refused.headers is not None
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="chat"'
    bearer = {"Authorization": "Bearer s3cret-token"}
    assert (
        await refused_status(client, "/ws", headers={"Authorization": "Bearer no"})
    ).status == 401
    ways: list[dict[str, Any]] = [{"headers": bearer}, {"params": {"ticket": "s3cret-token"}}]
    for kwargs in ways:
        async with client.ws_connect("/ws", **kwargs) as ws:
            assert await ws.receive_str() == "hello alice"


@check("auth-on-error")
async def _auth_on_error(run: Run) -> None:
    client = await run.client()
    refused = await refused_status(client, "/ws")
    assert refused.status == 401
    assert refused.headers is not None
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="chat"'
    response = await client.get("/ws", headers={"Authorization": "Bearer s3cret-token"})
    assert response.status == 400
    assert await response.json() == {"error": "invalid request"}
    evil = {"Origin": "https://evil.example", "Authorization": "Bearer s3cret-token"}
    assert (await refused_status(client, "/ws", headers=evil)).status == 403


covered("push-endpoint", by="push-app")
covered("push-routes", by="push-app")
covered("push-task", by="push-app")


def _tasks_running(name: str) -> list[asyncio.Task[Any]]:
    """The unfinished tasks that run the coroutine function ``name``."""
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", None) == name and not task.done()
    ]


@check("push-app")
async def _push_app(run: Run) -> None:
    assert run.served[0].kwargs == {"host": "127.0.0.1", "port": 8080}
    app = run.app()
    wsapp = app[WSAPP_KEY]
    client = await run.client()
    assert (await refused_status(client, "/ws?token=nobody")).status == 401
    async with (
        client.ws_connect("/ws?token=ann-token&topic=orders&topic=news") as ann,
        client.ws_connect("/ws?token=ann-token") as ann_phone,
        client.ws_connect("/ws?token=bob-token&topic=news") as bob,
    ):
        # The parent's WSAPP_KEY is the endpoint mounted at /ws, and each connection has a user.
        connections: list[Any] = list(wsapp.connections)  # Any: conn.user is the page's own
        assert sorted(conn.user for conn in connections) == ["ann", "ann", "bob"]
        assert all(conn.app is wsapp for conn in connections)
        response = await client.post("/topics/orders", data="3 new orders")
        assert response.status == 204
        assert await ann.receive_json() == {"topic": "orders", "text": "3 new orders"}
        response = await client.post("/users/ann", data="your order has shipped")
        assert response.status == 204
        for ws in (ann, ann_phone):
            assert await ws.receive_json() == {"to": "ann", "text": "your order has shipped"}
        await client.post("/topics/news", data="extra!")
        for ws in (ann, bob):
            assert await ws.receive_json() == {"topic": "news", "text": "extra!"}
        await client.post("/users/bob", data="hi bob")
        # Bob heard nothing before his own pushes; ann's phone heard nothing of the topics.
        assert await bob.receive_json() == {"to": "bob", "text": "hi bob"}
        await client.post("/users/ann", data="last")
        assert await ann_phone.receive_json() == {"to": "ann", "text": "last"}
        assert await ann.receive_json() == {"to": "ann", "text": "last"}
    assert (await client.post("/users/nobody", data="lost")).status == 204
    # The background task: pushes arrive while the application runs; cleanup cancels it.
    run.namespace["PERIOD"] = 0.01
    (asleep,) = _tasks_running("push_who_is_online")  # the first application's, for 30 s
    fast = await run.client(run["make_app"]())
    (task,) = set(_tasks_running("push_who_is_online")) - {asleep}
    async with fast.ws_connect("/ws?token=bob-token") as bob:
        assert await bob.receive_json() == {"online": ["bob"]}
        async with fast.ws_connect("/ws?token=ann-token") as ann:
            assert await ann.receive_json() == {"online": ["ann", "bob"]}
    await fast.close()
    assert task.cancelled()
    assert _tasks_running("push_who_is_online") == [asleep]


FORWARDED = {"Host": "chat.example.com", "X-Forwarded-Proto": "https"}


@check("nginx-origins")
async def _nginx_origins(run: Run) -> None:
    assert run.served[0].kwargs == {"host": "127.0.0.1", "port": 8080}
    client = await run.client()
    # What nginx sends: the proxy's own host and scheme in the request, the page's in Origin.
    for origin in ("https://chat.example.com", "https://www.example.com"):
        async with client.ws_connect("/ws", headers={"Origin": origin}) as ws:
            await ws.send_str("hi")
            assert await ws.receive_str() == "hi"
    refused = await refused_status(client, "/ws", headers={"Origin": "https://evil.example"})
    assert refused.status == 403


@check("nginx-forwarded")
async def _nginx_forwarded(run: Run) -> None:
    client = await run.client(run["app"])
    page = {"Origin": "https://chat.example.com"}
    headers = {**FORWARDED, **page, "X-Forwarded-For": "203.0.113.7, 10.0.0.2"}
    async with client.ws_connect("/ws", headers=headers) as ws:
        assert await ws.receive_str() == "hello 10.0.0.2 over https"
    # Without the proxy's headers the same page is another origin (http, not https): refused.
    assert (
        await refused_status(client, "/ws", headers={**page, "Host": FORWARDED["Host"]})
    ).status == 403
    evil = {**FORWARDED, "Origin": "https://evil.example"}
    assert (await refused_status(client, "/ws", headers=evil)).status == 403


async def _make_certificate(run: Run) -> None:
    """A self-signed certificate for localhost, as ``fullchain.pem`` and ``privkey.pem``."""
    openssl = require_program("openssl", "apt-get install openssl")
    process = await asyncio.create_subprocess_exec(
        openssl,
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout",
        "privkey.pem",
        "-out",
        "fullchain.pem",
        cwd=run.tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, errors.decode(errors="replace")
    run.monkeypatch.chdir(run.tmp_path)


@check("tls-app", prepare=_make_certificate)
async def _tls_app(run: Run) -> None:
    (served,) = run.served
    assert served.kwargs.keys() == {"port", "ssl_context"}
    server = await run.aiohttp_server(served.app, ssl=served.kwargs["ssl_context"])
    trusted = ssl.create_default_context(cafile=run.tmp_path / "fullchain.pem")
    client: TestClient[Any, Any] = await run.aiohttp_client(server)
    url = f"wss://localhost:{server.port}/ws"
    async with client.session.ws_connect(url, ssl=trusted) as ws:
        await ws.send_str("over TLS")
        assert await ws.receive_str() == "over TLS"


async def _start_redis(run: Run) -> None:
    """A real ``redis-server`` for the page, its URL in ``REDIS_URL``."""
    from redis_server import RedisServer

    program = require_program("redis-server", "apt-get install redis-server")
    server = RedisServer(program, run.tmp_path)
    await server.start()
    run.stack.push_async_callback(server.stop)
    run.monkeypatch.setenv("REDIS_URL", server.url)


@check("redis-app", prepare=_start_redis)
async def _redis_app(run: Run) -> None:
    assert run.served[0].kwargs == {"port": 8080}
    one = await run.client(run["make_app"]())
    two = await run.client(run["make_app"]())
    # A broadcast waits until its own process listens to the group's channel, not the others:
    # each process speaks first in the kitchen before it is expected to hear the other.
    async with one.ws_connect("/ws/kitchen") as ann:
        await ann.send_str("ann here")
        assert await ann.receive_str() == "ann here"
        async with two.ws_connect("/ws/kitchen") as bob, two.ws_connect("/ws/hall") as cy:
            await bob.send_str("bob here")
            assert await bob.receive_str() == "bob here"
            assert await ann.receive_str() == "bob here"
            await ann.send_str("hi from process one")
            assert await ann.receive_str() == "hi from process one"
            assert await bob.receive_str() == "hi from process one"
            await cy.send_str("anyone?")  # the hall did not hear the kitchen
            assert await cy.receive_str() == "anyone?"
    for client in (one, two):
        await client.close()  # stops the brokers while their Redis still runs


@check("redis-by-hand", prepare=_start_redis)
async def _redis_by_hand(run: Run) -> None:
    client = await run.client(run["app"])
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("routed by hand")  # relayed through Redis to the lobby
        assert await ws.receive_str() == "routed by hand"
    await client.close()  # stops the broker while its Redis still runs


@check("tuning-server")
async def _tuning_server(run: Run) -> None:
    wsapp = run["endpoint"][WSAPP_KEY]
    assert isinstance(wsapp, WebSocketApp)
    server = wsapp.websocket_server
    assert (server.heartbeat, server.close_timeout, server.compress) == (20.0, 5.0, False)
    client = await run.client()
    response = await client.get("/stats")
    assert await response.json() == {"connections": 0}
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("x" * 64 * 1024)
        assert await ws.receive_str() == "x" * 64 * 1024  # so the connection is counted
        response = await client.get("/stats")
        assert await response.json() == {"connections": 1}
        await ws.send_str("x" * (64 * 1024 + 1))
        assert await receive_close(ws) == WSCloseCode.MESSAGE_TOO_BIG


@check("tuning-backpressure")
async def _tuning_backpressure(run: Run) -> None:
    client = await run.client(aiohttp_wsapp.create_app(run["on_establish"]))
    async with client.ws_connect("/") as ws:
        await ws.send_str("3")
        assert [await ws.receive_bytes() for _ in range(3)] == [bytes(64 * 1024)] * 3
        assert await ws.receive_str() == "done"


# -- the checks: recovery -----------------------------------------------------------------------


@check("recovery-app")
async def _recovery_app(run: Run) -> None:
    from aiohttp_wsapp.history import read_envelope

    assert run.served[0].kwargs == {"port": 8080}
    client = await run.client()
    async with client.ws_connect("/ws/lobby") as ann:
        await ann.send_str("one")
        _, one, data = read_envelope(await ann.receive_str())
        assert data == "one"
    async with client.ws_connect("/ws/lobby") as bob:
        await bob.send_str("two")  # ann is away
        _, two, _ = read_envelope(await bob.receive_str())
        async with client.ws_connect("/ws/lobby", params={"since.lobby": str(one)}) as back:
            assert read_envelope(await back.receive_str()) == ("lobby", two, "two")
            assert await back.receive_json() == {"group": "lobby", "position": str(two)}
            await bob.send_str("three")
            _, three, data = read_envelope(await back.receive_str())
            assert (data, three.offset) == ("three", two.offset + 1)
    # From another epoch (a restarted process): nothing replayed, and the notice is ahead.
    stale = aiohttp_wsapp.Position("restarted", 9)
    async with client.ws_connect("/ws/lobby", params={"since.lobby": str(stale)}) as late:
        assert await late.receive_json() == {"group": "lobby", "position": str(three)}


@check("recovery-database")
async def _recovery_database(run: Run) -> None:
    from aiohttp_wsapp.history import read_envelope

    app = run["make_scores_app"]()
    client = await run.client(app)
    wsapp = app[run["SCOREBOARD"]]
    await run["score"](wsapp, "home", 1)
    async with client.ws_connect("/scores") as fan:
        state = await fan.receive_json()
        assert state["state"] == {"home": 1, "away": 0}
        await run["score"](wsapp, "away", 1)
        _, position, data = read_envelope(await fan.receive_str())
        assert json.loads(data) == {"team": "away", "goals": 1}
        assert position.offset == aiohttp_wsapp.Position.parse(state["position"]).offset + 1


# -- the checks: migration ----------------------------------------------------------------------


@check("plack-synopsis")
async def _plack_synopsis(run: Run) -> None:
    client = await run.client()
    async with client.ws_connect("/websocket") as ws:
        await ws.send_str("hi")
        assert await ws.receive_str() == "hi"
    await run.printed("Bye!!")
    response = await client.get("/websocket")
    assert (response.status, await response.text()) == (500, "Error: invalid request")
    response = await client.get("/")
    assert await response.text() == "your app"


@check("plack-results")
async def _plack_results(run: Run) -> None:
    client = await run.client()
    async with client.ws_connect("/websocket?user=ann", protocols=["chat"]) as ws:
        assert ws.protocol == "chat"
        assert await ws.receive_json() == {"user": "ann", "server": "ann@aiohttp-wsapp"}
        response_headers = ws._response.headers
        assert response_headers["X-Server"] == "aiohttp-wsapp"


@check("plack-messages")
async def _plack_messages(run: Run) -> None:
    client = await run.client(aiohttp_wsapp.create_app(run["on_establish"]))
    async with client.ws_connect("/") as ws:
        await ws.send_str("héllo")
        assert await ws.receive_str() == "text of 5 characters"
        await ws.send_bytes("héllo".encode())
        assert await ws.receive_bytes() == b"binary of 6 bytes"
        await ws.send_str("bye")
        message = await ws.receive(TIMEOUT)
        assert (message.type, message.data, message.extra) == (WSMsgType.CLOSE, 1000, "see you")


async def _echo_broadcast_shutdown(client: TestClient[Any, Any], path: str) -> None:
    """What both versions of the raw-aiohttp page do: echo, tell the others, close with 1001."""
    async with client.ws_connect(path) as ann, client.ws_connect(path) as bob:
        await ann.send_str("hi")
        assert await ann.receive_str() == "hi"
        assert await bob.receive_str() == "someone said: hi"
        await ann.send_bytes(b"\x00")
        assert await ann.receive_bytes() == b"\x00"
        shutdown = asyncio.create_task(client.server.close())
        assert await receive_close(ann) == WSCloseCode.GOING_AWAY
        assert await receive_close(bob) == WSCloseCode.GOING_AWAY
        await shutdown


@check("aiohttp-before")
async def _aiohttp_before(run: Run) -> None:
    await _echo_broadcast_shutdown(await run.client(run["app"]), "/ws")
    # aiohttp's close_code is the code of the client's answer, not the 1001 the server sent. It
    # is a WSCloseCode, which print() shows by number from Python 3.11, by name on 3.10.
    await run.printed(f"closed with {WSCloseCode.OK!s}")
    await run.printed(f"closed with {WSCloseCode.OK!s}")


@check("aiohttp-after")
async def _aiohttp_after(run: Run) -> None:
    await _echo_broadcast_shutdown(await run.client(run["app"]), "/ws")
    await run.printed("closed with 1001")
    await run.printed("closed with 1001")


async def _socketio_before(run: Run) -> None:
    # python-socketio is not a dependency: when it happens to be installed, build the app.
    if importlib.util.find_spec("socketio") is None:
        return
    namespace: dict[str, Any] = {"__name__": "socketio_before"}
    exec(run.block.compiled(), namespace)
    assert isinstance(namespace["app"], web.Application)


not_run(
    "socketio-before",
    why="the python-socketio code being migrated from; python-socketio is not a dependency",
    function=_socketio_before,
)


@check("socketio-after")
async def _socketio_after(run: Run) -> None:
    client = await run.client()
    assert (await refused_status(client, "/ws")).status == 401
    async with (
        client.ws_connect("/ws?name=ann") as ann,
        client.ws_connect("/ws?name=bob") as bob,
        client.ws_connect("/ws?name=cy") as cy,
    ):
        await ann.send_json({"event": "join", "room": "kitchen"})
        await ann.send_json({"event": "ping", "id": 7})  # answered after the join is done
        assert await ann.receive_json() == {"event": "reply", "id": 7, "data": "pong"}
        await cy.send_json({"event": "join", "room": "hall"})
        await bob.send_json({"event": "join", "room": "kitchen"})
        assert await ann.receive_json() == {"event": "joined", "name": "bob", "room": "kitchen"}
        await ann.send_json({"event": "chat_message", "room": "kitchen", "text": "hi"})
        assert await bob.receive_json() == {"event": "chat_message", "name": "ann", "text": "hi"}
        await ann.send_json({"event": "no such event"})  # ignored, as Socket.IO does
        await ann.close()
        assert await bob.receive_json() == {"event": "left", "name": "ann", "room": "kitchen"}
        await cy.send_json({"event": "ping", "id": 8})  # the hall heard nothing of the kitchen
        assert await cy.receive_json() == {"event": "reply", "id": 8, "data": "pong"}


# -- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=str)
async def test_code_block(
    block: Block,
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    block.compiled()
    async with contextlib.AsyncExitStack() as stack:
        run = Run(block, aiohttp_client, aiohttp_server, tmp_path, monkeypatch, stack)
        if block.tests:
            await run_pytest(run)
            return
        entry = CHECKS[block.name]
        if entry.covered_by is not None:
            run.execute(runnable_blocks_up_to(block))  # it runs; the later block checks it
            return
        if entry.prepare is not None:
            await entry.prepare(run)
        if entry.not_run is None:
            run.execute(runnable_blocks_up_to(block))
        assert entry.function is not None
        await entry.function(run)


def test_every_python_block_has_one_check() -> None:
    names = [block.name for block in PYTHON_BLOCKS if not block.tests]
    assert len(names) == len(set(names)), "two Python blocks share a name"
    unchecked = [
        str(block) for block in PYTHON_BLOCKS if not block.tests and block.name not in CHECKS
    ]
    assert not unchecked, "give these blocks a :name: and a check in tests/test_docs.py"
    assert CHECKS.keys() <= set(names), "checks of blocks that are gone"
    by_name = {block.name: block for block in PYTHON_BLOCKS}
    for name, entry in CHECKS.items():
        if entry.covered_by is not None:
            block, later = by_name[name], by_name[entry.covered_by]
            assert block.path == later.path, name
            assert block.line < later.line, name
            assert CHECKS[entry.covered_by].function is not None, name
    assert sum(entry.not_run is not None for entry in CHECKS.values()) <= 1, "keep not_run rare"


def test_every_code_block_has_a_known_language() -> None:
    for block in BLOCKS:
        assert block.language == PYTHON or block.language in NOT_PYTHON, (
            f"{block}: write ```python / code-block:: python for Python, "
            f"or use one of {sorted(NOT_PYTHON)}"
        )


@pytest.mark.parametrize("path", [path for path in PAGES if path.suffix == ".rst"], ids=str)
def test_no_code_outside_code_blocks(path: Path) -> None:
    # ``::`` literal blocks and doctest or include directives would show code no test runs.
    for number, line in enumerate(path.read_text().splitlines(), 1):
        directive = _DIRECTIVE.match(line)
        if directive is not None:
            assert directive["directive"] not in (
                "literalinclude",
                "testcode",
                "doctest",
                "highlight",
            ), f"{path}:{number}"
        else:
            assert not line.rstrip().endswith("::"), f"{path}:{number}: a literal block"
        assert not line.lstrip().startswith(">>> "), f"{path}:{number}: a doctest"


# -- the reference ------------------------------------------------------------------------------

REFERENCE = DOCS / "reference.rst"
_AUTO = re.compile(r"^\.\. auto(?:class|function|data|exception):: (?P<name>[\w.]+)", re.M)


def public_names() -> dict[str, object]:
    """Every public name: ``aiohttp_wsapp.__all__``, ``aiohttp_wsapp.redis.__all__`` and
    ``aiohttp_wsapp.prometheus.__all__``."""
    names: dict[str, object] = {
        name: getattr(aiohttp_wsapp, name) for name in aiohttp_wsapp.__all__
    }
    redis = importlib.import_module("aiohttp_wsapp.redis")
    for name in redis.__all__:
        names[f"redis.{name}"] = getattr(redis, name)
    prometheus = importlib.import_module("aiohttp_wsapp.prometheus")
    for name in prometheus.__all__:
        names[f"prometheus.{name}"] = getattr(prometheus, name)
    return names


def attribute_docstrings() -> set[str]:
    """The module-level names of the package that have a docstring after their assignment."""
    documented: set[str] = set()
    for path in (ROOT / "aiohttp_wsapp").glob("*.py"):
        body = ast.parse(path.read_text()).body
        for node, after in itertools.pairwise(body):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            if (
                isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                documented.update(t.id for t in targets if isinstance(t, ast.Name))
    return documented


def test_reference_documents_every_public_name() -> None:
    text = REFERENCE.read_text()
    module = "aiohttp_wsapp"
    documented: set[str] = set()
    for line in text.splitlines():
        if line.startswith(".. module:: ") or line.startswith(".. currentmodule:: "):
            module = line.split("::")[1].strip()
        elif match := _AUTO.match(line):
            documented.add(f"{module}.{match['name']}".removeprefix("aiohttp_wsapp."))
    assert documented == set(public_names())


def undocumented(name: str, obj: object, attributes: set[str]) -> Iterator[str]:
    """``name``, and the public methods and properties of class ``obj``, that lack a docstring."""
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        if name not in attributes:
            yield name
        return
    if not (obj.__doc__ or "").strip():  # a class's own docstring, not its base's
        yield name
    if inspect.isclass(obj):
        for member_name, member in vars(obj).items():
            documentable = inspect.isfunction(member) or isinstance(member, property)
            if member_name.startswith("_") or not documentable:
                continue
            if not (member.__doc__ or "").strip():
                yield f"{name}.{member_name}"


def test_every_public_name_has_a_docstring() -> None:
    attributes = attribute_docstrings()
    missing = {
        each for name, obj in public_names().items() for each in undocumented(name, obj, attributes)
    }
    assert missing == set(), "public names without a docstring"


# -- the build ----------------------------------------------------------------------------------


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    require_module("sphinx", "pip install sphinx")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    index = (tmp_path / "html" / "reference.html").read_text()
    for name in public_names():
        assert f'id="aiohttp_wsapp.{name}"' in index, f"{name} is not in the reference"


# -- the checks: monitoring and deploying (operations) ------------------------------------------


async def _require_prometheus(run: Run) -> None:
    require_module("prometheus_client", "pip install 'aiohttp-wsapp[prometheus]'")


@check("monitoring-app", prepare=_require_prometheus)
async def _monitoring_app(run: Run) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    client = await run.client()
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("héllo")
        assert await ws.receive_str() == "héllo"
        stats = await (await client.get("/stats")).json()
        assert stats["connections_open"] == 1
        assert (stats["messages_received"], stats["bytes_received"]) == (1, 6)
        assert stats["dropped"]["idle timeout"] == 0
    response = await client.get("/metrics")
    assert response.status == 200
    samples = {
        (sample.name, tuple(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(await response.text())
        for sample in family.samples
    }
    assert samples[("aiohttp_wsapp_handshakes_accepted_total", ())] == 1
    assert samples[("aiohttp_wsapp_messages_sent_total", ())] == 1
    assert samples[("aiohttp_wsapp_sent_bytes_total", ())] == 6
    assert ("process_cpu_seconds_total", ()) in samples  # the default registry's own


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@check("deploying-server")
async def _deploying_server(run: Run) -> None:
    # The page's program, run as it is with SIGTERM sent to it as a process manager would.
    (run.tmp_path / "server.py").write_text(run.block.code)
    port, drain_seconds, count = _free_port(), 1.5, 6
    env = {**os.environ, "PORT": str(port), "DRAIN_SECONDS": str(drain_seconds)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "server.py",
        cwd=run.tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )

    async def stop() -> None:
        if process.returncode is None:  # the test failed before the program ended
            process.kill()
            await process.wait()

    run.stack.push_async_callback(stop)
    assert process.stdout is not None
    while b"Running on" not in await asyncio.wait_for(process.stdout.readline(), TIMEOUT):
        pass
    url = f"ws://127.0.0.1:{port}/ws"
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(url) for _ in range(count)]
        await sockets[0].send_str("hi")
        assert await sockets[0].receive_str(timeout=TIMEOUT) == "hi"

        async def closed_at(ws: aiohttp.ClientWebSocketResponse[Any]) -> tuple[int | None, float]:
            message = await ws.receive(TIMEOUT)
            assert message.type is WSMsgType.CLOSE, message
            return message.data, loop.time()

        closing = [asyncio.create_task(closed_at(ws)) for ws in sockets]
        signalled = loop.time()
        process.send_signal(signal.SIGTERM)
        await asyncio.wait(closing, return_when=asyncio.FIRST_COMPLETED)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # draining: 503
            await session.ws_connect(url)
        assert refused.value.status == 503
        assert refused.value.headers is not None
        assert refused.value.headers["Retry-After"] in ("1", "2")
        closes = await asyncio.gather(*closing)
        for ws in sockets:
            await ws.close()
    assert [code for code, _ in closes] == [WSCloseCode.SERVICE_RESTART] * count
    times = sorted(at - signalled for _, at in closes)
    assert times[0] < drain_seconds / count  # the first at once, ...
    assert times[-1] >= drain_seconds * (count - 1) / count  # ... the last in the last slot
    assert times[-1] <= drain_seconds * 1.5
    # Then aiohttp's own graceful shutdown: the process ends by itself, successfully.
    assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0


@check("deploying-client")
async def _deploying_client(run: Run) -> None:
    attempts: list[str] = []

    def handshake(request: web.Request, response: web.WebSocketResponse) -> None:
        attempts.append("handshake")
        if len(attempts) == 1:
            raise web.HTTPServiceUnavailable(headers={"Retry-After": "1"})

    def on_establish(conn: aiohttp_wsapp.Connection, request: web.Request, hs: Any) -> None:
        if len(attempts) == 2:
            conn.close(WSCloseCode.SERVICE_RESTART)  # as a draining server does
        else:
            conn.send("welcome")

    server = aiohttp_wsapp.WebSocketServer(handshake=handshake)
    client = await run.client(aiohttp_wsapp.create_app(on_establish, websocket_server=server))
    welcomed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_message(ws: aiohttp.ClientWebSocketResponse, message: aiohttp.WSMessage) -> None:
        if not welcomed.done():
            welcomed.set_result(message.data)

    url = str(client.make_url("/"))
    staying = asyncio.create_task(run["stay_connected"](url, on_message, first_delay=0.05))
    try:
        assert await asyncio.wait_for(welcomed, TIMEOUT) == "welcome"
    finally:
        staying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await staying
    assert attempts == ["handshake"] * 3  # refused, then closed with 1012, then welcomed


# -- docs/howto/gunicorn.rst: gunicorn's aiohttp workers, and uvloop ----------------------------
# (Imports are local: this part stays self-contained at the end of a file that many edit.)


@check("gunicorn-app")
async def _gunicorn_app(run: Run) -> None:
    await _echoes(await run.client(run["app"]), "/ws")


@check("gunicorn-uvloop-run-app")
async def _gunicorn_uvloop_run_app(run: Run) -> None:
    require_module("uvloop", "pip install uvloop")
    import uvloop

    (served,) = run.served
    loop = served.kwargs.pop("loop")
    loop.close()  # web.run_app would have run the application on it, then closed it
    assert isinstance(loop, uvloop.Loop)
    assert served.kwargs == {"port": 8080}
    await _echoes(await run.client(), "/ws")


GUNICORN_STOP_TIMEOUT = 10.0 + 2 * TIMEOUT
"""How long gunicorn may take to stop after SIGTERM: the page's ``close_timeout`` and margins."""


def gunicorn_arguments(block_name: str, port: int) -> list[str]:
    """The arguments of the ``gunicorn`` line of a shell block of the gunicorn page, binding
    ``port`` with one worker (the page's four would only share this machine's cores)."""
    import shlex

    (block,) = (block for block in BLOCKS if block.name == block_name)
    line = next(line for line in block.code.splitlines() if line.startswith("gunicorn "))
    arguments = shlex.split(line)[1:]
    for option, value in (("--bind", f"127.0.0.1:{port}"), ("--workers", "1")):
        arguments[arguments.index(option) + 1] = value
    return arguments


async def ws_connect_when_up(session: aiohttp.ClientSession, url: str) -> Any:
    """Open a WebSocket to ``url`` as soon as a server listens there (it may be starting)."""
    deadline = asyncio.get_running_loop().time() + 3 * TIMEOUT
    while True:
        try:
            return await session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=TIMEOUT))
        except aiohttp.ClientConnectorError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)  # polling for the port to open, not waiting for correctness


@pytest.mark.parametrize("command", ["gunicorn-command", "gunicorn-uvloop-command"])
async def test_gunicorn_serves_the_page_app_and_stops_it_with_1001(
    command: str, tmp_path: Path
) -> None:
    """The page's module under the page's gunicorn command: it echoes, and on SIGTERM (a stop)
    every connection is closed with 1001 and gunicorn exits cleanly within the grace time."""
    import signal

    from aiohttp.test_utils import unused_port

    require_module("gunicorn", "pip install gunicorn")
    if "uvloop" in command:
        require_module("uvloop", "pip install uvloop")
    (module,) = (block for block in BLOCKS if block.name == "gunicorn-app")
    assert module.caption is not None
    (tmp_path / module.caption).write_text(module.code)
    port = unused_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gunicorn",
        *gunicorn_arguments(command, port),
        cwd=tmp_path,
        # gunicorn 24+ makes its control socket under ~/.gunicorn: one of its own per test.
        env={**os.environ, "HOME": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with aiohttp.ClientSession() as session:
            ws = await ws_connect_when_up(session, f"http://127.0.0.1:{port}/ws")
            async with ws:
                await ws.send_str("hello")
                assert await ws.receive_str(timeout=TIMEOUT) == "hello"
                process.send_signal(signal.SIGTERM)
                assert await receive_close(ws) == WSCloseCode.GOING_AWAY
        output, _ = await asyncio.wait_for(process.communicate(), GUNICORN_STOP_TIMEOUT)
        log = output.decode(errors="replace")
        assert process.returncode == 0, log
        worker_class = gunicorn_arguments(command, port)[-1]
        assert f"Using worker: {worker_class}" in log, log
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
