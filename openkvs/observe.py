"""What each request leaves behind for an operator: its request id (the ``X-Request-Id`` response header), an
access-log line and its metrics. The outermost ASGI layer, one per app; it replaces uvicorn's access log.

The access log (``--log-format text|json``, at ``--log-level info`` and below) goes to standard output, one line per
request::

    2026-12-02T00:16:22.123Z 5f0c19a2-1f 203.0.113.7 USER_ID "GET /v2/.../k?signature=REDACTED HTTP/1.1" 200 1024 0.8ms

(time in UTC, request id, client IP, user id or ``-``, request line with ``token`` and ``signature`` values
redacted, status, response body bytes, duration). Why not ``logging``: a LogRecord, a formatter and a flush per
line cost about as much as a whole cached record GET. Lines are formatted here and written in batches, at most
every ``FLUSH_SECONDS``, in writes of whole lines of at most ``PIPE_BUF`` bytes, so that several workers writing
to one pipe never interleave inside a line.

The request id is a per-process random prefix and a counter (no system call per request); a trusted proxy's
(``--trusted-proxies``) ``X-Request-Id`` is used instead when it sends one that is short and plain.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import sys
import time
import types
from collections.abc import Awaitable, Callable
from json.encoder import encode_basestring as _str  # a JSON string literal (C)
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openkvs import metrics
from openkvs.cycle import BUFFERS
from openkvs.logs import redact
from openkvs.ratelimit import client_ip

FLUSH_SECONDS = 0.1
FLUSH_LINES = 512
PIPE_BUF = 4096
MAX_REQUEST_ID = 128
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")
# In a request's scope: (status, body bytes) of the answer the HTTP protocol wrote itself while the app ran (a
# request refused in its body: openkvs/server.py). That answer is what the client got; the app's, if any, was dropped.
REFUSED = "openkvs.refused"


class LineWriter:
    """Access-log lines, gathered and written to standard output in batches (see the module docstring)."""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self._write = write or _write_stdout
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= FLUSH_LINES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            text = "".join(self._lines)
            self._lines = []
            try:
                self._write(text)
            except OSError:  # a closed or full stdout must not fail requests (uvicorn's logging would print and go on)
                pass


def _write_stdout(text: str) -> None:
    stream = sys.stdout
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a test harness: not a real file
        stream.write(text)
        stream.flush()
        return
    data = text.encode("utf-8", "backslashreplace")
    # written from a view, by offsets: slicing the bytes copied the rest of a batch for every write of PIPE_BUF
    view = memoryview(data)
    start, end = 0, len(data)
    while start < end:
        cut = end if end - start <= PIPE_BUF else data.rfind(b"\n", start, start + PIPE_BUF) + 1 or start + PIPE_BUF
        start += os.write(fd, view[start:cut])


_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))  # formatting the milliseconds cost more than the rest
# Numbers of the access line as text, looked up rather than formatted (formatting a float costs as much as a few
# dozen bytecodes): statuses, and durations in tenths of a millisecond up to 100 ms ("0.0".."99.9").
_DECIMAL = tuple(str(n) for n in range(1000))
_TENTHS = tuple(f"{n // 10}.{n % 10}" for n in range(1000))


def duration_text(ns: int) -> str:
    """A duration in nanoseconds as the text line shows it: milliseconds with one decimal, rounded half up."""
    tenths = (ns + 50_000) // 100_000
    return _TENTHS[tenths] if tenths < 1000 else f"{tenths // 10}.{tenths % 10}"


class _Clock:
    """UTC timestamps with milliseconds; the seconds part formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        ms = int(time.time() * 1000)
        second = ms // 1000
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self._prefix + _MILLIS[ms % 1000]


def _printable(text: str) -> str:
    """A request line as the log shows it: control characters and quotes escaped (no forged lines or fields)."""
    if text.isprintable() and '"' not in text:
        return text
    return text.encode("unicode_escape").decode("ascii").replace('"', '\\"')


def direct_call(app: ASGIApp) -> ASGIApp:
    """``app``, or its class's ``__call__`` bound to it when that is a Python function: calling an instance goes
    through its type's call slot (``__call__`` looked up and the arguments packed into a tuple on every call),
    a bound method is called directly. Each ASGI layer of a request calls the next one once."""
    call = getattr(type(app), "__call__", None)  # noqa: B004 - the function itself, not a test of callable
    if isinstance(call, types.FunctionType):
        return call.__get__(app)  # type: ignore[no-any-return]
    return app


class Observe:
    """The outermost layer: request id, access log, metrics. ``templates``: route endpoint -> its path template,
    the metrics' ``route`` label (the raw path would make a label per key)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        log_format: str | None,
        with_metrics: bool,
        templates: dict[int, str],
        download_route: str,
        trusted: list[Any],
        writer: LineWriter | None = None,
        added_headers: Callable[[Any], list[tuple[bytes, bytes]]] | None = None,
        inner: Any = None,
    ) -> None:
        """``added_headers``: the headers of app.ApiMiddleware (made with ``headers_outside``), given the
        request's rate limit: added here, before X-Request-Id, by this layer's one wrapper of ``send`` (each
        wrapper costs a coroutine per message and a copy of the response's start). ``inner``: that
        ApiMiddleware when it is ``app``: its steps (``wrap_receive``, its app, ``failed``) run in this layer's
        coroutine instead of one of its own (HTTP requests only)."""
        self.app = app
        self._app = direct_call(app)
        self.inner = inner
        if inner is not None:
            assert inner.headers_outside and inner is app, "inner: the ApiMiddleware that is app, headers outside"
            self._inner_app = direct_call(self.inner.app)
        self.added_headers = added_headers
        self.json = log_format == "json"
        self.writer = (writer or LineWriter()) if log_format else None
        self.with_metrics = with_metrics
        self.templates = templates
        self.download_route = download_route
        self.trusted = tuple(trusted)
        self.clock = _Clock()
        self._prefix = secrets.token_hex(4) + "-"
        self._count = 0
        # the download route's endpoint, by id as in ``templates``: checked at each response's start
        self._download_ids = frozenset(k for k, v in templates.items() if v == download_route)

    def _request_id(self, scope: Scope) -> str:
        if self.trusted:
            for name, value in scope["headers"]:
                if name == b"x-request-id":
                    if self._from_trusted_proxy(scope) and 0 < len(value) <= MAX_REQUEST_ID:
                        text = value.decode("latin-1")
                        if _ID_CHARS.issuperset(text):
                            return text
                    break
        return self._next_id()

    def _next_id(self) -> str:
        self._count += 1
        return f"{self._prefix}{self._count:x}"

    def _from_trusted_proxy(self, scope: Scope) -> bool:
        client = scope.get("client")
        try:
            peer = ipaddress.ip_address(client[0]) if client else None
        except ValueError:
            return False
        return peer is not None and any(peer in net for net in self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                try:
                    await self.app(scope, receive, send)
                finally:
                    if self.writer is not None:
                        self.writer.flush()
                return
            await self.app(scope, receive, send)
            return
        start = time.perf_counter_ns()  # (an int: the line's duration is exact integer arithmetic)
        if self.trusted:
            request_id = self._request_id(scope)
        else:  # _next_id, without its call
            self._count += 1
            request_id = f"{self._prefix}{self._count:x}"
        scope["openkvs.request_id"] = request_id
        scope["openkvs.raw_send"] = send  # the server's own (api/download.py aborts a stalled download through it)
        status = 0
        sent = 0
        downloading = False
        added_headers = self.added_headers
        # (not self.inner in the closure: an attribute read per message costs more than the cell)
        inner = self.inner

        def observed_send(message: Message) -> Awaitable[None]:
            """The server's ``send`` of ``message``, returned to be awaited (no coroutine of its own: the
            bookkeeping runs as the app calls it, and the app awaits at once)."""
            nonlocal status, sent, downloading
            if message["type"] == "http.response.body":
                buffers = message.get(BUFFERS)
                sent += len(message.get("body", b"")) if buffers is None else sum(map(len, buffers))
            elif message["type"] == "http.response.start":
                status = message["status"]
                id_header = (b"x-request-id", request_id.encode())
                if added_headers is None:
                    headers = [*message.get("headers", ()), id_header]
                else:
                    if inner is None:  # (ApiMiddleware's test: no error answer after this; ``inner`` is told)
                        scope["openkvs.started"] = True
                    headers = [*message.get("headers", ()), *added_headers(scope.get("openkvs.ratelimit_limit")),
                               id_header]
                message["headers"] = headers  # (each send makes its message: changed in place, not copied)
                if status < 300 and self.with_metrics and id(scope.get("endpoint")) in self._download_ids:
                    downloading = True
                    metrics.OPEN_DOWNLOADS.inc()
            return send(message)

        try:
            if inner is None:
                await self._app(scope, receive, observed_send)
            else:  # inner.__call__'s steps (ApiMiddleware, headers outside), without its coroutine
                try:
                    await self._inner_app(scope, inner.wrap_receive(receive), observed_send)
                except Exception as exc:
                    # whether a response started, from here: a key less in the scope, whose 22nd key makes
                    # its dict grow (uvicorn's scope has 13 when it comes, the app adds 8 more)
                    await inner.failed(scope, exc, observed_send, status != 0)
        finally:
            ns = time.perf_counter_ns() - start
            # uvicorn's send is a method of its request cycle, which holds the scope: left in the scope, it made a
            # cycle of ~11 objects a request that only the garbage collector freed (~10k instructions a served
            # GET, in collections every few requests)
            del scope["openkvs.raw_send"]
            refused = scope.get(REFUSED)
            if refused is not None:
                status, sent = refused
            if scope["method"] == "HEAD":  # the server writes no body for a HEAD, whatever the app handed over (a
                sent = 0  # JSON answer's whole body, made for its Content-Length): the log and metrics say none went
            if downloading:
                metrics.OPEN_DOWNLOADS.dec()
                metrics.ZIP_BYTES.inc(0 if refused is not None else sent)
            if self.with_metrics:
                metrics.pending.observe(self.templates.get(id(scope.get("endpoint")), "unmatched"), scope["method"],
                                        status, ns, sent)  # (the route's template: _route)
            if self.writer is not None:  # the access line's fields (here: a method call costs as much as this)
                trusted = self.trusted  # (the state's trusted_proxies: both are settings.trusted_networks)
                client = scope.get("client")
                user = scope.get("openkvs.user")
                target = scope.get("raw_path") or scope["path"].encode()
                qs = scope["query_string"]
                if qs:
                    target = target + b"?" + qs
                path = target.decode("latin-1")
                if "=" in path:  # (redact's own test, without its call: most paths have no query)
                    path = redact(path)
                # status 0: no response was sent: the connection went away (or the app failed) before one started;
                # a client gone in the middle of its body too (so in the metrics: a request left unanswered)
                self._line(request_id, client_ip(scope, trusted) if trusted or not client else client[0],
                           user.id if user is not None else "-", scope["method"], path,
                           scope.get("http_version", "1.1"), status, sent, ns)

    def _route(self, scope: Scope) -> str:
        return self.templates.get(id(scope.get("endpoint")), "unmatched")

    def refused(self, ip: str, method: str, target: str, status: int, sent: int, seconds: float) -> None:
        """The line and the count of a request that the HTTP protocol answered itself, before the app saw it (431,
        408, the per-IP 429, a body refused while queued behind responses: openkvs/server.py). ``method`` and
        ``target`` are "-" when not received yet. Its route is "unmatched": none was looked for."""
        ns = int(seconds * 1e9)
        if self.with_metrics:
            metrics.pending.observe("unmatched", method, status, ns, sent)
        if self.writer is not None:
            self._line(self._next_id(), ip, "-", method, redact(target), "1.1", status, sent, ns)

    def _line(self, request_id: str, ip: str, user_id: str, method: str, path: str, version: str, status: int,
              sent: int, ns: int) -> None:
        """Format one line and hand it to the writer (``ns``: the duration in nanoseconds). The clock's,
        ``_printable``'s, ``duration_text``'s and the writer's common cases are written out here: each call costs
        about as much as its work, and this runs on every request."""
        clock = self.clock
        ms = int(time.time() * 1000)  # _Clock.now
        if ms // 1000 != clock._second:
            now = clock.now()
        else:
            now = clock._prefix + _MILLIS[ms % 1000]
        if self.json:  # by hand: json.dumps of a dict costs several times more; the strings escaped in C
            line = (
                f'{{"time":"{now}","request_id":{_str(request_id)},"client":{_str(ip)},'
                f'"user":{_str(user_id)},"method":{_str(method)},"path":{_str(path)},"http":{_str(version)},'
                f'"status":{status},"bytes":{sent},"duration_ms":{ns / 1e6:.3f}}}\n'
            )
        else:
            request = f"{method} {path} HTTP/{version}"
            if not request.isprintable() or '"' in request:
                request = _printable(request)
            tenths = (ns + 50_000) // 100_000  # duration_text
            line = (f'{now} {request_id} {ip} {user_id} "{request}" '
                    f'{_DECIMAL[status] if 0 <= status < 1000 else status} {sent} '
                    f'{_TENTHS[tenths] if tenths < 1000 else duration_text(ns)}ms\n')
        writer: LineWriter = self.writer  # type: ignore[assignment]
        lines = writer._lines  # LineWriter.add
        lines.append(line)
        if len(lines) >= FLUSH_LINES:
            writer.flush()
        elif writer._timer is None:
            writer._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, writer.flush)
