"""The real app in this process (its lifespan run, requests over httpx's ASGI transport) on a storage the test
owns, with every storage call counted: for tests of logic that need no socket."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.from_thread
import click
import httpx
import uvicorn
from anyio.from_thread import BlockingPortal

from openkvs.app import create_app
from openkvs.config import Settings
from openkvs.storage.base import Storage
from tests.conftest import Server


class CountingStorage:
    """A storage whose coroutine methods (its queries, and a method's call that hands one over) and ``read_blob``
    calls are recorded in ``calls``; its lifetime stays the test's (open/aclose do nothing)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.calls: list[str] = []

    async def open(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if inspect.iscoroutinefunction(attr):

            async def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return await attr(*args, **kwargs)

            return counted
        if inspect.ismethod(attr) and name != "read_blob":  # a plain method may hand over a coroutine (PostgreSQL's
            # look_up_store): counted as a query when it does

            def maybe_counted(*args: Any, **kwargs: Any) -> Any:
                result = attr(*args, **kwargs)
                if inspect.iscoroutine(result):
                    self.calls.append(name)
                return result

            return maybe_counted
        if name == "read_blob":

            def reading(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return attr(*args, **kwargs)

            return reading
        return attr


@contextlib.asynccontextmanager
async def app_client(
    storage: Storage | CountingStorage, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Any]]]:
    """An httpx client on the app over ``storage`` (rate limits off unless given), and the app's lifespan state.
    The storage stays open afterwards: it is the test's."""
    if not isinstance(storage, CountingStorage):
        storage = CountingStorage(storage)
    app = create_app(Settings.load({"rate_limits": "off", **settings}), storage)  # type: ignore[arg-type]
    send_in, receive_in = anyio.create_memory_object_stream[dict[str, Any]](10)
    send_out, receive_out = anyio.create_memory_object_stream[dict[str, Any]](10)
    lifespan: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

    async def with_state(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["state"] = dict(lifespan["state"])  # what a server does with the lifespan's state
        await app(scope, receive, send)

    async with anyio.create_task_group() as tg:
        tg.start_soon(app, lifespan, receive_in.receive, send_out.send)
        await send_in.send({"type": "lifespan.startup"})
        assert (await receive_out.receive())["type"] == "lifespan.startup.complete"
        transport = httpx.ASGITransport(app=with_state, client=("127.0.0.1", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, lifespan["state"]
        await send_in.send({"type": "lifespan.shutdown"})
        await receive_out.receive()


# -- a whole server in this process, with conftest.Server's interface -------------------------------------------------


class _PortalTransport(httpx.BaseTransport):
    """A synchronous httpx transport that hands each request to the app over httpx's ASGI transport, in the event
    loop that the server's portal thread runs. Does what the HTTP server does around the app: a HEAD's body is
    dropped, and the client address is 127.0.0.1."""

    def __init__(self, portal: BlockingPortal, app: Any) -> None:
        self._portal = portal
        self._asgi = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()  # a sync body (bytes, a generator) becomes a ByteStream, which the ASGI transport can iterate

        async def send() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            response = await self._asgi.handle_async_request(request)
            body = b"".join([chunk async for chunk in response.aiter_raw()])  # as sent: not yet decoded
            return response.status_code, response.headers.raw, body

        status, headers, body = self._portal.call(send)
        if request.method == "HEAD":
            body = b""
        # A stream, not content=: httpx would add a Content-Length the app did not send.
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body), request=request)


class QuickStopUvicorn(uvicorn.Server):
    """uvicorn's server with a main loop that ``stop_now`` ends at once (uvicorn's own looks at ``should_exit``
    every 0.1 s) and a shutdown without a pause when no connection is open: each of the suite's hundreds of
    in-process servers waited out both when it stopped."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stop_now = anyio.Event()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):  # the Date header, once a second; True once should_exit is set
            counter = (counter + 1) % 864000
            with anyio.move_on_after(0.1):
                await self.stop_now.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.server_state.connections:
            await super().shutdown(sockets)  # which gives the open connections 0.1 s to see it, then waits for them
            return
        # With none open, what uvicorn's shutdown does but its 0.1 s for connections to see it (lifespan is off).
        for server in self.servers:
            server.close()
        await self._wait_tasks_to_complete()


@contextlib.asynccontextmanager
async def serving(app: Any, **config: Any) -> AsyncIterator[tuple[str, int]]:
    """uvicorn with openkvs's protocol (or ``http=`` another) serving ``app`` on a free port of 127.0.0.1, in the
    running event loop, stopped on the way out; yields its address. ``config``: more of uvicorn.Config's arguments."""
    from openkvs.server import HttpProtocol

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = {"lifespan": "off", "http": HttpProtocol, "ws": "none", "log_config": None, "access_log": False, **config}
    server = QuickStopUvicorn(uvicorn.Config(app, **config))
    task = asyncio.create_task(server.serve([sock]))
    try:
        while not server.started:
            assert not task.done(), task
            await asyncio.sleep(0.01)
        yield sock.getsockname()
    finally:
        server.should_exit = True
        server.stop_now.set()
        await asyncio.wait_for(task, 30)
        sock.close()


class InProcessServer(Server):
    """conftest.Server's interface on the real app in this process: ``client()``/``anon()`` reach it over the ASGI
    transport (no socket, no HTTP parsing: the fast path for tests of logic), and ``url`` is a real socket served
    by uvicorn with openkvs's HTTP protocol in the same event loop, on the same app and storage (for raw requests,
    official clients, ``curl``). The CLI runs in process too. What it cannot do: ``proc`` (no process to kill,
    restart or measure); a response to ``client()`` arrives whole (a test that reads a download as it streams, or
    drops it halfway, needs a process). The access log and the server's log lines go to ``log()``, not to the test
    run's output. The HTTP protocol's limits (head size and timeout, connections per IP, trusted proxies) are read
    once per test process: other values for them need a process (``start`` refuses them)."""

    def start(self) -> None:
        from openkvs.app import create_app
        from openkvs.cli import serve
        from openkvs.config import Settings
        from openkvs.observe import LineWriter
        from openkvs.server import limits

        # The flags given, and nothing click read from this process's environment: the server's environment is
        # self.env (a variable another test left in os.environ must not pick, say, the PostgreSQL schema).
        ctx = serve.make_context("serve", list(self.args), default_map=None)
        flags = {name: value for name, value in ctx.params.items()
                 if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE}
        settings = Settings.load(flags, environ=self.env)
        protocol = limits()
        wanted = (settings.max_header_bytes, settings.header_timeout, settings.max_connections_per_ip,
                  tuple(settings.trusted_networks))
        if wanted != (protocol.head_bytes, protocol.head_timeout, protocol.per_ip, protocol.trusted):
            raise ValueError("the HTTP protocol's limits are per process: this server needs make_server's process")
        # IPPROTO_TCP named, not left 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP (as
        # create_server's own do), and without it every response on a kept-alive connection after the first waited
        # 40 ms (its body's write held back by Nagle until the client's delayed ACK of the head).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", int(self.url.rsplit(":", 1)[1])))
        self._log = io.StringIO()
        self._stack = contextlib.ExitStack()
        self._portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
        # A clock the test moves by hand for the rate limiter's buckets (make_server's ``clock``), else the real one.
        self._app = create_app(settings, rate_limit_clock=getattr(self, "rate_limit_clock", None))
        if self._app.writer is not None:  # the access log into log(), not into the test run's output
            self._app.writer = LineWriter(self._log.write)
        self._state: dict[str, Any] = {}
        self._stack.enter_context(self._portal.wrap_async_context_manager(self._serving(settings, sock)))

    def _with_state(self) -> Any:
        app, state = self._app, self._state

        async def with_state(scope: dict[str, Any], receive: Any, send: Any) -> None:
            scope["state"] = dict(state)  # what a server does with the lifespan's state
            await app(scope, receive, send)

        with_state.app = app  # type: ignore[attr-defined]  # found by the HTTP protocol as through uvicorn's wrappers
        return with_state

    @contextlib.asynccontextmanager
    async def _serving(self, settings: Any, sock: socket.socket) -> AsyncIterator[None]:
        from openkvs.logs import RedactTokens
        from openkvs.server import HttpProtocol

        handler = logging.StreamHandler(self._log)
        handler.addFilter(RedactTokens())
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        loggers = [logging.getLogger(n) for n in ("openkvs", "uvicorn.error", "uvicorn.access")]
        for lg in loggers:
            lg.addHandler(handler)
            lg.setLevel(settings.log_level.upper())
        send_in, receive_in = anyio.create_memory_object_stream[dict[str, Any]](10)
        send_out, receive_out = anyio.create_memory_object_stream[dict[str, Any]](10)
        lifespan: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self._state}
        config = uvicorn.Config(
            self._with_state(), lifespan="off", http=HttpProtocol, ws="none", log_config=None,
            access_log=False, proxy_headers=False,  # openkvs writes its own (openkvs/observe.py), as `serve` does
            server_header=False, timeout_graceful_shutdown=5,
        )
        server = QuickStopUvicorn(config)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._app, lifespan, receive_in.receive, send_out.send)
                await send_in.send({"type": "lifespan.startup"})
                started = await receive_out.receive()
                assert started["type"] == "lifespan.startup.complete", started
                served = anyio.Event()

                async def serve() -> None:
                    try:
                        await server.serve([sock])
                    finally:
                        served.set()

                tg.start_soon(serve)
                while not server.started and not served.is_set():
                    await anyio.sleep(0.01)
                assert server.started, "uvicorn did not start"
                yield
                server.should_exit = True
                server.stop_now.set()
                await served.wait()
                await send_in.send({"type": "lifespan.shutdown"})
                await receive_out.receive()
        finally:
            for lg in loggers:
                lg.removeHandler(handler)

    def client(self, token: str | None = None, **kw: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"} if token != "" else {}
        transport = _PortalTransport(self._portal, self._with_state())
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, transport=transport, **kw)  # type: ignore[arg-type]

    def anon(self) -> httpx.Client:
        return self.client(token="")

    def stop(self, kill: bool = False) -> None:
        if getattr(self, "_stack", None) is not None:
            self._stack.close()
            self._stack = None

    def log(self) -> str:
        return self._log.getvalue()
