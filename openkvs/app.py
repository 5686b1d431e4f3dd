"""The ASGI application: the route table, the middleware that gives every response its common headers and turns
errors into the API's JSON shape, and the lifespan that opens and closes storage and the rate limiter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette._utils import get_route_path
from starlette.convertors import Convertor, StringConvertor, register_url_convertor
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openkvs import auth, console, errors, health, metrics, openapi
from openkvs.api import datasets, download, queues, records
from openkvs.api.common import AppState, budgets
from openkvs.api.dispatch import CORS_EXPOSE_HEADERS, methods
from openkvs.api.download_slots import DownloadSlots
from openkvs.api.stores import STORES_API
from openkvs.config import Settings
from openkvs.observe import Observe, direct_call
from openkvs.storage.base import Storage, StorageError

log = logging.getLogger("openkvs")


class _KeyConvertor(Convertor[str]):
    """``{key:key}``: the rest of the path, whatever it holds. Starlette's ``path`` (``.*``) never matches a newline,
    so ``/records/k%0Ak`` fell through to the 404 page-not-found; the key rule (400 invalid-record-key) judges it."""

    regex = "[\\s\\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("key", _KeyConvertor())


class _NotFound:
    """The catch-all: every method on an unknown path is 404 page-not-found. An ASGI app rather than a function:
    Starlette calls a plain function as a request handler (with one argument) and allows it only GET/HEAD, so
    other methods would get its plain-text 405."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise errors.PageNotFound()


not_found = _NotFound()


# Record requests first: they are most of the traffic, and no other pattern matches their paths.
DOWNLOAD_ROUTE = "/v2/key-value-stores/{store_id}/records"  # the ZIP download: its bytes and open count are metrics
RQ = "/v2/request-queues/{queue_id}"
QUEUE_PATHS = "/v2/request-queues/"

ROUTES = [
    Route(
        "/v2/key-value-stores/{store_id}/records/{key:key}",
        records.record_methods(
            GET=records.record_endpoint,
            PUT=records.record_endpoint,
            POST=records.record_endpoint,
            DELETE=records.record_endpoint,
        ),
    ),
    *STORES_API.routes(),
    *datasets.routes(),
    Route("/v2/key-value-stores/{store_id}/keys", methods(GET=records.list_keys)),
    Route(DOWNLOAD_ROUTE, methods(GET=download.download_records)),
    *queues.QUEUES_API.routes(),
    # the requests of a queue (openkvs/api/queues.py): the literal paths before /requests/{request_id}
    Route(f"{RQ}/requests", methods(GET=queues.requests_endpoint, POST=queues.requests_endpoint)),
    Route(f"{RQ}/requests/batch", methods(POST=queues.batch_endpoint, DELETE=queues.batch_endpoint)),
    Route(f"{RQ}/requests/unlock", methods(POST=queues.unlock_endpoint)),
    Route(f"{RQ}/requests/{{request_id}}",
          methods(GET=queues.request_endpoint, PUT=queues.request_endpoint, DELETE=queues.request_endpoint)),
    Route(f"{RQ}/requests/{{request_id}}/lock", methods(PUT=queues.lock_endpoint, DELETE=queues.lock_endpoint)),
    Route(f"{RQ}/head", methods(GET=queues.head_endpoint)),
    Route(f"{RQ}/head/lock", methods(POST=queues.head_lock_endpoint)),
    Route("/v2/openapi.json", methods(GET=openapi.openapi_json)),
    Route("/health/live", methods(GET=health.live)),
    Route("/health/ready", methods(GET=health.ready)),
    Route("/metrics", methods(GET=metrics.endpoint)),
    # The web console: its static files (openkvs/console/); it uses the API above like any client.
    Route("/", methods(GET=console.to_console)),
    Route("/console", methods(GET=console.to_console)),
    Route("/console/{path:path}", methods(GET=console.page)),
    Route("/{path:path}", not_found),
]


class _BodyDeadline:
    """The server's ``receive`` with a deadline for each piece of a request body: a client that stops sending in
    the middle of an upload gets 408 and the partial upload is dropped (storage cleans up as for a disconnect),
    instead of holding its connection and upload state forever. Once the body is complete, ``receive`` waits
    untimed again (a streaming response listens on it for the client's disconnect)."""

    __slots__ = ("receive", "timeout", "done")

    def __init__(self, receive: Receive, timeout: float) -> None:
        self.receive = receive
        self.timeout = timeout
        self.done = False

    async def __call__(self) -> Message:
        if self.done:
            return await self.receive()
        try:
            # asyncio's own timeout: anyio.fail_after's cancel scope cost a fifth of a small PUT's event loop CPU
            async with asyncio.timeout(self.timeout):
                message = await self.receive()
        except TimeoutError:
            raise errors.BodyTimeout() from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.done = True
        return message


def _segment_then_rest(route: Route) -> Callable[[str], dict[str, str] | None] | None:
    """For a pattern ``A{x}B{y:key}`` (A and B literal, B starting with "/", ``x`` a ``str`` parameter): string
    operations that match exactly the paths its regex ``^A(?P<x>[^/]+)B(?P<y>[\\s\\S]*)$`` matches, with the
    same parameters. ``[^/]+`` ends at the first "/" after A (B starts with one), and ``[\\s\\S]*`` takes the
    rest, a final newline too. A regex match costs more than the rest of routing. None for any other pattern."""
    parts = re.fullmatch(r"([^{}]+)\{(\w+)\}(/[^{}]*)\{(\w+):key\}", route.path)
    if parts is None or not isinstance(route.param_convertors[parts[2]], StringConvertor):
        return None
    head, first, middle, rest = parts.groups()
    skip = len(head)

    def split(path: str) -> dict[str, str] | None:
        if not path.startswith(head):
            return None
        slash = path.find("/", skip)
        if slash <= skip or not path.startswith(middle, slash):
            return None
        return {first: path[skip:slash], rest: path[slash + len(middle):]}

    return split


class ApiRouter(Router):
    """Starlette's Router, trying its first route (record requests) before the general loop: the same regex and
    convertors and the same scope fields, without the loop's per-route set-up (a tuple and a dict from
    ``Route.matches``, then ``Route.handle``). Any path the first route doesn't match takes the usual way, so
    what answers a request is what Router would pick: the first route has no method list (``methods`` answers
    every method itself), so Router too would hand it every request its pattern matches."""

    def __init__(self, routes: list[Route], **kwargs: Any) -> None:
        super().__init__(routes=routes, **kwargs)
        first = routes[0]
        assert first.methods is None, "the first route must take every method (Router would answer 405 itself)"
        self._first = first
        self._first_app = direct_call(first.app)
        self._first_match = first.path_regex.match
        self._first_convertors = list(first.param_convertors.items())
        # The record route's parameters are text as matched (``str`` and ``key``): no conversion to call.
        self._first_plain = all(type(c) in (StringConvertor, _KeyConvertor) for c in first.param_convertors.values())
        self._split = _segment_then_rest(first)
        # The requests of a queue (the paths under QUEUE_PATHS): a crawl's every call. Tried before the general
        # loop, which would first try every pattern above them. No other pattern matches these paths: the queue
        # routes of STORES_API/QUEUES_API under the same prefix end after one segment (``{queue_id}``).
        self._queue_routes = [r for r in routes if isinstance(r, Route) and r.path.startswith(RQ + "/")]
        # Router's __call__ only calls ``middleware_stack``, which is ``app`` without middleware: __call__ is
        # ``app`` itself here (below), one coroutine less per request (and ``app`` makes none of its own).
        assert self.middleware_stack == self.app, "ApiRouter takes no middleware"

    def app(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:  # type: ignore[override]
        """The route's app's own coroutine, returned to be awaited: routing runs no code after it, so a coroutine
        of this function's own (made and torn down on every request) would only pass it on."""
        if scope["type"] == "http":
            path = get_route_path(scope) if scope.get("root_path") else scope["path"]
            split = self._split
            params: dict[str, Any] | None
            if split is not None and self._first_plain and not scope.get("path_params"):
                params = split(path)
            else:
                match = self._first_match(path)
                if match is None:
                    params = None
                else:
                    params = dict(scope.get("path_params", {}))
                    for name, convertor in self._first_convertors:
                        params[name] = convertor.convert(match[name])
            if params is not None:
                route = self._first
                if "router" not in scope:
                    scope["router"] = self
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = params
                return self._first_app(scope, receive, send)  # type: ignore[no-any-return]
            if path.startswith(QUEUE_PATHS) and path.count("/", len(QUEUE_PATHS)) and not scope.get("path_params"):
                for route in self._queue_routes:
                    matched, child_scope = route.matches(scope)
                    if matched is Match.FULL:  # (``methods`` takes every method: never PARTIAL)
                        if "router" not in scope:
                            scope["router"] = self
                        scope["route"] = route
                        scope.update(child_scope)
                        return route.handle(scope, receive, send)
        return super().app(scope, receive, send)

    __call__ = app  # type: ignore[assignment]


class ApiMiddleware:
    """Pure ASGI (so streaming responses pass through untouched): adds the common headers to every response and
    renders any error raised before the response started in the API's JSON shape. The one place where storage
    errors become API errors too: handlers let them rise. A 500 hides internals and logs the traceback with a
    request id. After the response started, an error can only abort the connection."""

    CORS_HEADERS = [
        (b"access-control-allow-origin", b"*"),
        (b"access-control-expose-headers", CORS_EXPOSE_HEADERS.encode()),
    ]

    def __init__(self, app: ASGIApp, settings: Settings, *, headers_outside: bool = False) -> None:
        """``headers_outside``: the layer outside (observe.Observe, given ``headers_added``) adds the common
        headers and sets ``scope["openkvs.started"]`` as a response starts; ``send`` is not wrapped here."""
        self.app = app
        self._app = direct_call(app)
        self.headers_outside = headers_outside
        self.body_timeout = settings.body_timeout
        self.default_limit = str(max(settings.rate_limit_user_per_minute // 60, 1)).encode()
        # The headers added to each response, by the rate limit it names: encoded once (a handful of limits).
        self._added: dict[object, list[tuple[bytes, bytes]]] = {}

    def _headers_added(self, limit: object) -> list[tuple[bytes, bytes]]:
        added = self._added.get(limit)
        if added is None:
            value = str(limit).encode() if limit else self.default_limit
            added = [*self.CORS_HEADERS, (b"x-ratelimit-limit", value)]
            if len(self._added) < 64:
                self._added[limit] = added
        return added

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # the server's own (set by observe.Observe, outside): a stalled download aborts through it (api/download.py)
        scope.setdefault("openkvs.raw_send", send)
        if self.headers_outside:
            send_with_headers = send
        else:

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    scope["openkvs.started"] = True
                    message = {
                        **message,
                        "headers": [
                            *message.get("headers", ()),
                            *self._headers_added(scope.get("openkvs.ratelimit_limit")),
                        ],
                    }
                await send(message)

        try:
            await self._app(scope, _BodyDeadline(receive, self.body_timeout), send_with_headers)
        except Exception as exc:
            await self.failed(scope, exc, send_with_headers)

    def wrap_receive(self, receive: Receive) -> Receive:
        """The ``receive`` this layer hands the app (a deadline for each piece of a request body)."""
        return _BodyDeadline(receive, self.body_timeout)

    async def failed(self, scope: Scope, exc: Exception, send: Send, started: bool | None = None) -> None:
        """After the app raised ``exc`` (called in its ``except`` block): the API's error answer if no response
        started, else ``exc`` again. observe.Observe runs this layer's steps itself (``inner``), with these, and
        says whether a response ``started`` (else ``scope["openkvs.started"]`` does)."""
        if isinstance(exc, ClientDisconnect):
            return  # the client went away mid-upload; nothing to answer, and storage already cleaned up
        if isinstance(exc, StorageError):
            metrics.storage_error(exc)
        if started is None:
            started = "openkvs.started" in scope
        if started:
            # An ApiError, StorageError or any other after the response started: uvicorn closes the connection,
            # the client sees a short body, never a complete-looking one.
            raise exc
        if isinstance(exc, errors.ApiError):
            api_error = exc
        elif isinstance(exc, StorageError):
            api_error = errors.from_storage_error(exc, scope.get("method", ""), scope.get("path", ""))
            if isinstance(api_error, errors.InternalError):  # not one the API names: as unexpected as below
                api_error = self._internal(scope)
        else:
            api_error = self._internal(scope)
        await self._send_error(api_error, send)

    @staticmethod
    def _internal(scope: Scope) -> errors.ApiError:
        """A 500 that hides internals; the traceback goes to the log under a request id the answer names."""
        request_id = scope.get("openkvs.request_id") or secrets.token_hex(6)  # the access log's and X-Request-Id
        log.exception("request %s failed: %s %s", request_id, scope.get("method"), scope.get("path"))
        return errors.InternalError(f"Internal server error (request id {request_id}).")

    @staticmethod
    async def _send_error(exc: errors.ApiError, send: Send) -> None:
        body = exc.body()
        headers = [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def open_storage(settings: Settings, background: bool = True) -> Storage:
    """The storage the settings name. ``background``: SQLite's maintenance tasks (garbage collection, counters,
    renewals, the fill of older rows' ZIP headers), which a server wants and a short command does not."""
    blob_store = None
    if settings.blob_store:
        from openkvs.storage.bucket import S3BlobStore

        blob_store = S3BlobStore(
            settings.blob_store,
            endpoint=settings.s3_endpoint,
            region=settings.s3_region,
            path_style=settings.s3_path_style,
            inline_max=settings.blob_inline_max,
        )
    if settings.database_url:
        from openkvs.storage.postgres import PostgresStorage

        return PostgresStorage(
            settings.database_url,
            namespace=settings.database_schema,
            max_snapshots=settings.max_downloads,
            blob_store=blob_store,
        )
    from openkvs.storage.sqlite import SQLiteStorage

    return SQLiteStorage(settings.data_dir, fsync=settings.fsync, blob_store=blob_store, background=background)


def create_app(
    settings: Settings | None = None,
    storage: Storage | None = None,
    *,
    rate_limit_clock: Callable[[], float] | None = None,
) -> ASGIApp:
    """The whole API. ``rate_limit_clock``: for tests only (``make_limiter``'s ``clock``); the server passes none."""
    settings = settings or Settings.load()
    storage = storage or open_storage(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[dict[str, AppState]]:
        await storage.open()
        limiter = None
        policy = None
        if settings.rate_limits == "on":
            from openkvs.ratelimit import make_limiter
            from openkvs.ratelimit.policy import RateLimitPolicy

            limiter = make_limiter(settings.redis_url or None, timeout=settings.redis_timeout, clock=rate_limit_clock)
            policy = RateLimitPolicy(
                limiter,
                per_user_per_minute=settings.rate_limit_user_per_minute,
                per_store_per_second=settings.rate_limit_store_per_second,
                per_store_records_per_second=settings.rate_limit_records_per_second,
                budgets=budgets(settings),
            )
        # Lifespan state: the server copies it into every request's scope["state"] (a plain dict lookup later).
        st = AppState(settings, storage, auth.TokenCache(storage), policy, settings.trusted_networks,
                      DownloadSlots(settings.max_downloads, settings.max_downloads_per_user))
        try:
            yield {"openkvs": st}
        finally:
            if limiter is not None:
                await limiter.aclose()
            await health.close(st)
            await storage.aclose()

    # A Router, not a Starlette app: ApiMiddleware already is the outermost error handler, so Starlette's two
    # middleware layers around it would only cost time on every request. ``default``: a path no route pattern
    # matches still gets the JSON 404.
    api = ApiMiddleware(ApiRouter(ROUTES, default=not_found, lifespan=lifespan), settings, headers_outside=True)
    # The access log and metrics, outermost: they see every answer, errors included, as sent. Observe adds
    # ApiMiddleware's headers too: one wrapper of ``send`` for both.
    logged = settings.log_level.lower() in ("trace", "debug", "info")
    return Observe(
        api,
        inner=api,  # ApiMiddleware's steps run in Observe's coroutine: one coroutine less per request
        added_headers=api._headers_added,
        log_format=settings.log_format if logged else None,
        with_metrics=settings.metrics != "off",
        templates={id(r.endpoint): r.path for r in ROUTES if r.endpoint is not not_found},
        download_route=DOWNLOAD_ROUTE,
        trusted=settings.trusted_networks,
    )
