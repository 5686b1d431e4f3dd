"""The real app in this process (its lifespan run, requests over httpx's ASGI transport) on a storage the test
owns, with every storage call counted: for tests of logic that need no socket."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx

from openkvs.app import create_app
from openkvs.config import Settings
from openkvs.storage.base import Storage


class CountingStorage:
    """A storage whose coroutine methods (its queries) and ``read_blob`` calls are recorded in ``calls``; its
    lifetime stays the test's (open/aclose do nothing)."""

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
