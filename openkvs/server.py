"""The HTTP/1.1 connection: uvicorn's httptools protocol plus the limits uvicorn lacks (issue 11 items 11, 15, 17).

Why a subclass and not ASGI middleware: uvicorn (0.54) bounds neither a request's head nor the time a client takes
to send it, and caps connections only globally (``limit_concurrency``: a 503 for everyone). httptools buffers a
header value whole before handing it over, so a 100 MiB header was held in memory before any ASGI code ran; the
size must be counted as bytes arrive. And httptools drops a URL's ``#fragment`` before the app sees the path. The
h11 protocol has a head limit (a 400, not a 431) but parses a request with about four times the CPU of httptools.

What it adds, all from settings (``--max-header-bytes``, ``--header-timeout``, ``--max-connections-per-ip``):

- 431 once a request line and headers pass the head limit (counted on arrival, to within one read of the socket);
  and once a chunked body's trailer section (RFC 9112 7.1.2: fields after the last chunk) passes the same limit
  (counted the same way, a budget of its own). httptools hands trailer fields to the same callback as the head's,
  and uvicorn appended them to the request's headers, which the app had already been given: a 50 MB trailer was
  held whole, in httptools' buffer of one field and then in that list. They are dropped here, never merged into
  the head's fields (RFC 9110 6.5.1: a recipient may discard them; openkvs uses none);
- 408 when a head is not complete within the head timeout, counted from the connection or, on a kept-alive one,
  from the head's first bytes (idle time between requests is uvicorn's keep-alive timeout); a connection that
  never sent a byte is just closed;
- 429 for a connection over the cap on open connections per client IP; a trusted proxy's are not counted (it
  carries many clients). The count is per server process;
- 400 for a ``#`` in the request target (``PUT .../records/victim#x`` wrote ``victim``);
- 501 for a transfer coding other than chunked (``gzip, chunked`` was read as chunked alone).

And one write a response where uvicorn makes two: its ``RequestResponseCycle.send`` writes the status line and
headers, then the body, each at once: two ``send()`` system calls for a small record's GET, a third of a served GET's
time by py-spy (BENCHMARKS.md). Each request's cycle gets ``_HeadWithBody`` as its transport, which holds the head
until the first body write and hands both to the socket together (``writelines``: one ``writev`` on uvloop, as
nginx does). This relies on the cycle's internals (its ``transport`` attribute, which writes it makes in which
state): hence the upper bound on uvicorn in pyproject.toml.

And each request's cycle is openkvs/cycle.py's ``Cycle`` (uvicorn's, whose ``send`` writes a response head from
remembered header lines, and a head and body without a coroutine): ``on_headers_complete`` is uvicorn's, making that
class.

Each refusal is the API's JSON error with ``Connection: close``, then a lingering close: the write side is shut
and whatever the client still sends is read and dropped for a moment, so that it reads the answer rather than a
connection reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import urllib.parse
from asyncio import TimerHandle, Transport
from typing import Any, NamedTuple

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from openkvs import errors, metrics
from openkvs.config import Settings
from openkvs.cycle import BUFFERS, Cycle, Http10Cycle
from openkvs.observe import REFUSED, Observe

log = logging.getLogger("openkvs")

LINGER_SECONDS = 2.0  # after a refusal, how long the client's further bytes are read and dropped
LINGER_BYTES = 1024 * 1024  # and how many at most
MAX_LOGGED_TARGET = 1024  # of a refused head's request target, the bytes its access-log line shows


class Limits(NamedTuple):
    head_bytes: int
    head_timeout: float
    per_ip: int
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    rate_limit_header: bytes  # X-RateLimit-Limit, which every response carries


_limits: Limits | None = None
_open_per_ip: dict[str, int] = {}  # client IP -> connections open in this process


def limits() -> Limits:
    """From the settings in the environment (``openkvs serve`` hands every resolved one down), read once."""
    global _limits
    if _limits is None:
        s = Settings.load()
        per_second = max(s.rate_limit_user_per_minute // 60, 1)
        _limits = Limits(
            s.max_header_bytes, s.header_timeout, s.max_connections_per_ip, tuple(s.trusted_networks),
            str(per_second).encode(),
        )
    return _limits


class _Refused(Exception):
    """Raised in a parser callback to stop httptools; data_received answers with the error it carries."""

    def __init__(self, error: errors.ApiError) -> None:
        self.error = error


class _Trailers:
    """Stands in for uvicorn's list of the request's header fields once its head is complete (uvicorn appends each
    field httptools hands over to it, and after the head those are the trailer section's): counts each trailer
    field's bytes as the head's are counted, refuses past the limit, and keeps none. Iterated (uvicorn's upgrade
    check) it is the head's fields, which the scope holds."""

    __slots__ = ("head", "size", "limit")

    def __init__(self, limit: int) -> None:
        self.head: list[tuple[bytes, bytes]] = []
        self.size = 0  # bytes of the trailer fields handed over (name, value, ": " and CRLF, as _head_size)
        self.limit = limit

    def append(self, field: tuple[bytes, bytes]) -> None:
        self.size += len(field[0]) + len(field[1]) + 4
        if self.size > self.limit:
            raise _Refused(errors.HeaderFieldsTooLarge(self.limit, trailers=True))

    def __iter__(self) -> Any:
        return iter(self.head)


class _HeadWithBody:
    """The transport as one request's ``RequestResponseCycle`` sees it: the cycle's first write, its response's head,
    is held and goes out with the next, the body's first piece, in one system call; later writes go straight
    through. A 204's or 304's empty body is still a write, of b"". If the cycle closes the connection instead (an
    error after the head, say), the head goes first, as it went before. If the client goes away meanwhile the head
    is dropped with the cycle (uvicorn writes nothing to a disconnected cycle). Not given to a HEAD's cycle (uvicorn
    writes no body for it: the head would wait for the response's end) nor to a request that expects ``100
    Continue`` (that is its cycle's first write: rare enough to leave as uvicorn sends it).

    A streamed response whose first piece is slow to come (a download or export that reads before its first
    piece) shows its head only with that piece: the client has nothing to read before it anyway. An app that wants
    its head out at once sends an empty body message with ``more_body=True`` first: that write flushes it."""

    __slots__ = ("_transport", "_head")

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._head: bytes | bytearray | memoryview | None = None  # None: the head not written yet; b"": sent

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head:
            self._head = b""
            self._transport.writelines((head, data))
        elif head is None:
            self._head = data
        else:
            self._transport.write(data)

    def writelines(self, parts: tuple[bytes | bytearray | memoryview, ...]) -> None:
        head = self._head
        if head:
            self._head = b""
            parts = (head, *parts)
        elif head is None:  # (not a cycle's first write, its head: nothing to hold)
            self._head = b""
        self._transport.writelines(parts)

    def close(self) -> None:
        head = self._head
        if head:
            self._head = b""
            self._transport.write(head)
        self._transport.close()

    # The rest of what is asked of a cycle's transport: uvicorn's receive() asks is_closing, api/download.py aborts
    # a stalled download. Named one by one: a __getattr__ would slow every attribute of this class (~4k
    # instructions a request under callgrind: no specialised attribute loads for a class with one).
    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def abort(self) -> None:
        self._transport.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


class HttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits()
        self._head_limit = self.limits.head_bytes
        self._ip: str | None = None  # counted in _open_per_ip
        self._head_timer: TimerHandle | None = None
        self._head_bytes = 0  # bytes of the current, unfinished head seen before the chunk being parsed
        self._chunk = 0  # size of the chunk being parsed
        self._trailers = _Trailers(self.limits.head_bytes)
        # A chunk's size line read (on_chunk_header) and none of its data since (on_body): 1 in the read being parsed,
        # 2 before it. A chunk of data has some in the next read; the last chunk (size 0) has its trailer section.
        self._chunk_begun = 0
        self._trailer_reads = 0  # bytes of the reads wholly in a trailer section (its fields handed over or not)
        self._refused = False
        # a refusal waiting for the responses, and the scope of the request refused in its body (else None)
        self._deferred: tuple[errors.ApiError, str | None, Any] | None = None
        self._dropped = 0
        self._head_start = 0.0  # when the head being received began (for a refusal's access-log line)
        self._done = self.loop.create_future()  # what the cycle's send returns when it did its work at once
        self._done.set_result(None)

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_start = self.loop.time()
        ip = self.client[0] if self.client else None
        if ip is not None and self.limits.per_ip and not self._trusted(ip):
            if _open_per_ip.get(ip, 0) >= self.limits.per_ip:
                self._refuse(errors.RateLimitExceeded(), f"over {self.limits.per_ip} connections from {ip}")
                return
            _open_per_ip[ip] = _open_per_ip.get(ip, 0) + 1
            self._ip = ip
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ip is not None:
            left = _open_per_ip[self._ip] - 1
            if left:
                _open_per_ip[self._ip] = left
            else:
                del _open_per_ip[self._ip]
            self._ip = None
        self._cancel_head_timer()
        if self._deferred is not None:  # gone before the answer (before the responses ahead of it were done)
            scope = self._deferred[2]
            self._deferred = None
            self._log_refusal(self.client[0] if self.client else "-", 0, 0, scope)
        super().connection_lost(exc)

    def _trusted(self, ip: str) -> bool:
        if not self.limits.trusted:
            return False
        address = ipaddress.ip_address(ip)
        return any(address in net for net in self.limits.trusted)

    def data_received(self, data: bytes) -> None:
        # uvicorn's, plus the head's size and timer after each chunk and our own answer to a refusal
        if self._refused:
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        scope = self.scope
        self._chunk = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Refused):  # raised by one of our callbacks; httptools wraps it
                self._refuse(exc.__context__.error)
            else:
                self._refuse(errors.InvalidInput("Invalid HTTP request received."), f"not HTTP: {exc}")
            return
        if self.scope is not None and "method" not in self.scope:  # the chunk ended inside a request's head
            if self.scope is scope:  # which began in an earlier chunk: all of this one is head
                self._head_bytes += len(data)
            else:  # which began in this chunk: what the parser has handed over of it
                self._head_bytes = self._head_size()
            if self._head_bytes > self.limits.head_bytes:
                self._refuse(errors.HeaderFieldsTooLarge(self.limits.head_bytes), "request head over the limit")
            elif self._head_timer is None:
                self._head_start = self.loop.time()
                self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)
        elif self._chunk_begun:
            if self._chunk_begun == 1:  # (this read may hold data of chunks before it: nothing to count yet)
                self._chunk_begun = 2
            else:  # no data since the size line a read ago: the last chunk's, and this whole read is its trailers
                self._trailer_reads += len(data)
                # (the fields handed over are counted by _Trailers; a field not ended yet is held by httptools,
                # not handed over: its bytes are counted here, to within the read the section began in)
                if self._trailer_reads > self._head_limit:
                    self._refuse(errors.HeaderFieldsTooLarge(self._head_limit, trailers=True),
                                 "trailer section over the limit")

    def on_chunk_header(self) -> None:
        self._chunk_begun = 1
        self._trailer_reads = 0
        self._trailers.size = 0  # (only the last chunk's are followed by fields)

    def on_body(self, body: bytes) -> None:
        self._chunk_begun = 0
        super().on_body(body)

    def on_chunk_complete(self) -> None:
        self._chunk_begun = 0

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def on_headers_complete(self) -> None:
        # Every request passes here: kept to a few cheap tests (the record GET is the benchmark).
        if self._head_timer is not None:
            self._cancel_head_timer()
        if self._head_bytes + self._chunk > self._head_limit and self._head_size() > self._head_limit:
            raise _Refused(errors.HeaderFieldsTooLarge(self._head_limit))  # (exact size only when it may matter)
        self._head_bytes = 0
        # The fields httptools hands over from now on are the body's trailers: counted, not added (see _Trailers)
        head = self._trailers.head = self.headers  # (the scope's list)
        self.headers = self._trailers  # type: ignore[assignment]
        if b"#" in self.url:
            raise _Refused(errors.InvalidInput("A request target must not contain '#'."))
        for name, value in head:
            if name == b"transfer-encoding":
                self._check_transfer_coding(value)
        # uvicorn's on_headers_complete from here, its cycle made as ours: a Cycle (made as one: a cycle's class
        # changed after it was made keeps its attributes in a dict, and every access to them is slower), whose
        # transport is _HeadWithBody but for the two requests that class leaves out
        parser = self.parser
        http_version = parser.get_http_version()
        method = parser.get_method()
        scope = self.scope
        scope["method"] = method.decode("ascii")
        scope["extensions"] = {BUFFERS: {}}  # (what Cycle's send takes beyond ASGI's messages)
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = parsed_url.query or b""
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency or len(self.tasks) >= self.limit_concurrency
        ):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        else:
            app = self.app
        existing_cycle = self.cycle
        transport: Any = self.transport
        if not self.expect_100_continue and method != b"HEAD":
            transport = _HeadWithBody(transport)
        self.cycle = cycle = (Cycle if http_version != "1.0" else Http10Cycle)(
            scope=scope,
            transport=transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        cycle.done = self._done
        if existing_cycle is None or existing_cycle.response_complete:
            self._start_asgi_task(cycle, app)
        else:  # pipelined: queued until the one before is answered
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))

    @staticmethod
    def _check_transfer_coding(value: bytes) -> None:
        for coding in value.decode("latin-1").split(","):
            if coding.strip().lower() != "chunked":
                raise _Refused(errors.TransferCodingNotImplemented(coding.strip()))

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            # a pipelined head waiting behind a response still being sent: judged once that one is done
            self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)
        elif self.scope is None or "method" in self.scope:  # not a byte of a request yet
            self.transport.close()
        else:
            self._refuse(errors.RequestTimeout(), f"request head not complete in {self.limits.head_timeout:g} s")

    def _refuse(self, error: errors.ApiError, why: str | None = None) -> None:
        """Answer ``error`` and close the connection, lingering (see the module's docstring). The bytes after it
        are not read. With responses under way (requests pipelined before it, in the same read), the answer goes
        after the last of them (whose cycle then calls ``_after_the_last``): an answer now would corrupt theirs,
        and a close now would lose them. Refused in the body of the request being served: answered now."""
        self._refused = True
        self._cancel_head_timer()
        self._unset_keepalive_if_required()
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_started:
            # Refused in the body of the last request (a chunked body's framing): that body can never be whole, so
            # its response would never come (its app waited for the body timeout, then 408). Its app is told the
            # client is gone, as for a dropped connection (an upload is dropped); the refusal is its answer: now,
            # or, queued behind responses under way, in its turn instead of its app.
            cycle.disconnected = True
            cycle.message_event.set()
            if not self.pipeline:
                # Its app runs (it waits for the body): the request's one access line and its metrics are
                # Observe's, when the app ends, with this answer's status (whatever the app does next is dropped:
                # its cycle is disconnected). A line here too made two for one request, Observe's with status 0.
                self._answer_refusal(error, why, cycle.scope)
            else:
                self._deferred = (error, why, cycle.scope)
                self.pipeline[0] = (cycle, self._refusal_in_turn)  # (the last request's: uvicorn appends left)
            return
        if cycle is not None and cycle.more_body:
            # Refused in the body of a request whose app answered without waiting for it (a 401, a 404): the client
            # has its answer, and Observe its line; a second answer would answer no request. The rest is not read,
            # and the connection closes once that answer is out.
            log.warning("%s: %s, after the answer (%s)", self.client[0] if self.client else "-", error.type,
                        why or error.message)
            if cycle.response_complete:
                self._close_lingering()
            else:
                cycle.on_response = self._close_after_the_last
            return
        if cycle is not None and not cycle.response_complete:
            self._deferred = (error, why, None)
            cycle.on_response = self._after_the_last  # (the last request's cycle, maybe queued)
            return
        self._answer_refusal(error, why)

    async def _refusal_in_turn(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI app run in the turn of a queued request refused in its body (its cycle is disconnected, so
        uvicorn expects no response from it): the responses before it are done, so the refusal is answered."""
        self._after_the_last()

    def _after_the_last(self) -> None:
        """The last response before a refusal is done: uvicorn's bookkeeping, then the refusal's answer (none
        after a response that closed the connection: connection_lost logs the refusal)."""
        self.on_response_complete()
        if self._deferred is not None and not self.transport.is_closing():
            error, why, scope = self._deferred
            self._deferred = None
            self._answer_refusal(error, why, logged=scope)

    def _close_after_the_last(self) -> None:
        """The response of a request refused in its body after that response began is done: the connection closes,
        with no answer of its own (``_refuse``)."""
        self.on_response_complete()
        if not self.transport.is_closing():
            self._close_lingering()

    def _close_lingering(self) -> None:
        """Closes the connection after what was written: the write side now, the rest a while later, so that the
        client reads the answer before a reset could discard it (see the module's docstring)."""
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _answer_refusal(self, error: errors.ApiError, why: str | None, running: Any = None, logged: Any = None) -> None:
        """``running``: the scope of the request refused, when its app is running (refused in its body): the
        answer is written in its scope for observe.Observe, which writes that request's line. ``logged``: the
        scope of a request refused in its body whose app never ran (queued behind responses): its line here names
        it."""
        client = self.client[0] if self.client else "-"
        log.warning("%s: %d %s (%s)", client, error.status, error.type, why or error.message)
        if error.status == 429:
            metrics.RATE_LIMITED.labels("connection").inc()  # over --max-connections-per-ip: before any request
        body = error.body()
        head = [STATUS_LINE[error.status]]
        for name, value in [
            *self.server_state.default_headers,
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"access-control-allow-origin", b"*"),
            (b"x-ratelimit-limit", self.limits.rate_limit_header),
            (b"connection", b"close"),
        ]:
            head += [name, b": ", value, b"\r\n"]
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self._close_lingering()
        if running is not None:
            running[REFUSED] = (error.status, len(body))
        else:
            self._log_refusal(client, error.status, len(body), logged)

    def _log_refusal(self, client: str, status: int, sent: int, scope: Any = None) -> None:
        """The access-log line of a request refused here: the app never saw it, so Observe did not write one.
        ``scope``: the request's, its head parsed (refused in its body), else what was read of its head, if any."""
        app = self.app
        while app is not None and not isinstance(app, Observe):
            app = getattr(app, "app", None)  # through uvicorn's wrappers (proxy headers, message logger)
        if app is None:
            return
        method, target = "-", "-"
        if scope is not None:  # its target as Observe's lines show one
            raw = scope["raw_path"] + b"?" + scope["query_string"] if scope["query_string"] else scope["raw_path"]
            method, target = scope["method"], raw[:MAX_LOGGED_TARGET].decode("latin-1")
        elif self.scope is not None and "method" not in self.scope and getattr(self, "url", b""):  # a head begun
            target = self.url[:MAX_LOGGED_TARGET].decode("latin-1")
            with contextlib.suppress(httptools.HttpParserError):
                method = self.parser.get_method().decode("latin-1")
        app.refused(client, method, target, status, sent, self.loop.time() - self._head_start)
