"""One request's response as the server writes it: uvicorn's ``RequestResponseCycle`` (httptools protocol), whose
``send`` does its common cases as uvicorn does but cheaper. openkvs/server.py gives every request's cycle this
class.

uvicorn's ``send`` is a coroutine, and writes each response header by four steps: a regular-expression search of
its name and of its value (the protection against a header that would split the response), the name lowered, and
three compares with the names that change the response's framing (``content-length``, ``transfer-encoding``,
``connection``). A record GET's response has 13 headers (with the date), most of them the same bytes on every
response (the CORS list, the security headers, the rate limit), and those steps were the largest piece a served
GET costs over bare Starlette's 3 headers (BENCHMARKS.md, issue 12). Here:

- the line a header pair makes (``name: value\\r\\n``, the name lowered) is remembered once the pair passed
  uvicorn's checks, and found again by the pair (a dict look-up, in C). Of the three framing names only
  ``content-length`` is remembered (with its length: the response's framing is set from it as uvicorn sets it),
  the others never, nor ``x-request-id`` (new on every response: it would only push the others out); a pair not
  remembered, or a bad one, goes through uvicorn's steps and checks (a bad one is refused every time it comes, as
  uvicorn refuses it). At most ``LINES_KEPT`` are held: then they are all dropped
  (an ETag differs by record), and the constant ones come back at their next response;
- the head, a body that fits its ``Content-Length`` and a chunked body are written without a coroutine: ``send``
  returns an awaitable that is already done (``done``: a future of the connection's event loop); a chunk's
  framing is written beside its bytes (``writelines``), not joined to them, and so are a chunk's buffers where the
  app sends a list of them (BUFFERS, an ASGI extension the server offers in the scope). Every other case (a HEAD's
  body, a body longer or shorter than announced, a paused or closed connection, uvicorn's access log on, a message
  out of order) is uvicorn's own ``send``, unchanged (a list of buffers joined first).

What is written, and when a response is refused, is what uvicorn's ``send`` does (tests/test_server_cycle.py
compares the two). This relies on the cycle's internals: hence the upper bound on uvicorn in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

# The ASGI extension this server offers (in every request's scope["extensions"]): a body message may carry its bytes
# as a list of buffers under this key (its "body" b""), written with one writev where a bytes object joined from them
# would copy every byte first (a jsonl export's rows: api/download.py). A send that goes to uvicorn joins them.
BUFFERS = "openkvs.buffers"
LINES_KEPT = 256  # header pairs whose line is remembered
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})  # uvicorn's send acts on these
# Not remembered: new on every response (observe.py), it would only push the others out
_UNIQUE = frozenset({*_FRAMING, b"x-request-id"})
# uvicorn's checks, the patterns its send searches with
_bad_name = httptools_impl.HEADER_RE.search
_bad_value = httptools_impl.HEADER_VALUE_RE.search
_lines: dict[tuple[bytes, bytes], bytes] = {}  # a header pair found clean -> its line in a response head
_lengths: dict[bytes, tuple[bytes, int]] = {}  # a clean content-length value -> its line and the length


def remembered() -> dict[tuple[bytes, bytes], bytes]:
    """The header lines held now (for tests), the content-length ones too."""
    return {**_lines, **{(b"content-length", value): line for value, (line, _) in _lengths.items()}}


def forget() -> None:
    """Drop every remembered line (for tests)."""
    _lines.clear()
    _lengths.clear()


class Cycle(RequestResponseCycle):
    done: asyncio.Future[None]  # set by the protocol: already done, of the connection's loop

    def send(self, message: Any) -> Any:  # type: ignore[override]
        """uvicorn's ``send``: its common cases written here without a coroutine, all others handed to it."""
        if self.flow.write_paused or self.disconnected:
            return RequestResponseCycle.send(self, _joined(message))
        if not self.response_started:
            if message["type"] == "http.response.start" and not self.access_log:
                self._write_head(message)
                return self.done
        elif (
            message["type"] == "http.response.body"
            and not self.response_complete
            and not self.chunked_encoding
            and BUFFERS not in message
        ):
            # (chunked_encoding: False with a Content-Length; None for a HEAD's, a 204's or a 304's response)
            body = message.get("body", b"")
            more_body = message.get("more_body", False)
            left = self.expected_content_length - len(body)
            if left >= 0 and (more_body or not left) and self.scope["method"] != "HEAD":
                self.expected_content_length = left
                self.transport.write(body)
                if not more_body:
                    self._complete()
                return self.done
        elif (
            message["type"] == "http.response.body"
            and not self.response_complete
            and self.chunked_encoding
            and self.scope["method"] != "HEAD"
            and not self.expected_content_length
        ):
            # A chunked body (a streamed download or export): the chunk's size line, its bytes and its end go to
            # the transport as three buffers, which uvloop writes with one writev, where uvicorn joins them into a
            # new bytes object first: a copy of every byte a jsonl export sends, on the event loop.
            body = message.get("body", b"")
            more_body = message.get("more_body", False)
            end = b"\r\n" if more_body else b"\r\n0\r\n\r\n"
            buffers = message.get(BUFFERS)
            size = sum(map(len, buffers)) if buffers else 0
            if size:
                self.transport.writelines((b"%x\r\n" % size, *buffers, end))
            elif body:
                self.transport.writelines((b"%x\r\n" % len(body), body, end))
            else:
                self.transport.write(b"" if more_body else b"0\r\n\r\n")  # (b"": _HeadWithBody's flush)
            if not more_body:
                self._complete()
            return self.done
        return RequestResponseCycle.send(self, _joined(message))

    def abort(self) -> None:
        """Drop the connection at once, unsent bytes and all (a stalled download, a failure after the first byte):
        the client of a chunked body sees it cut by its missing end."""
        self.transport.abort()

    def _complete(self) -> None:
        """uvicorn's steps after a response's last body message."""
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    def _write_head(self, message: Any) -> None:
        """uvicorn's steps for ``http.response.start`` (its access log off), each header's line remembered."""
        self.response_started = True
        self.waiting_for_100_continue = False
        status_code = message["status"]
        content = [STATUS_LINE[status_code]]
        has_connection_close = False
        lines = _lines
        for header in [*self.default_headers, *message.get("headers", ())]:
            try:
                line = lines.get(header)
            except TypeError:  # not hashable (a list, a bytearray): checked as uvicorn checks it, not remembered
                line = None
            if line is not None:
                content.append(line)
                continue
            name, value = header
            if name == b"content-length" and type(value) is bytes:  # as openkvs sends it: line and length remembered
                known = _lengths.get(value)
                if known is not None:
                    if self.chunked_encoding is None:  # (a second one is only written, as uvicorn does)
                        self.expected_content_length = known[1]
                        self.chunked_encoding = False
                    content.append(known[0])
                    continue
            if _bad_name(name):
                raise RuntimeError("Invalid HTTP header name.")
            if _bad_value(value):
                raise RuntimeError("Invalid HTTP header value.")
            name = name.lower()
            line = b"".join((name, b": ", value, b"\r\n"))
            if name not in _UNIQUE:
                if len(lines) >= LINES_KEPT:
                    lines.clear()
                try:
                    lines[header] = line
                except TypeError:  # not hashable
                    pass
            elif name == b"x-request-id":
                pass
            elif name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
                if header[0] == b"content-length" and type(value) is bytes:
                    if len(_lengths) >= LINES_KEPT:
                        _lengths.clear()
                    _lengths[value] = (line, self.expected_content_length)
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection":
                connection = [token.lower().strip() for token in value.split(b",")]
                if b"close" in connection:
                    self.keep_alive = False
                    has_connection_close = True
            content.append(line)

        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if self.chunked_encoding is None and self.scope["method"] != "HEAD" and status_code not in (204, 304):
            # Neither content-length nor transfer-encoding specified
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.transport.write(b"".join(content))


class Http10Cycle(Cycle):
    """A response to an HTTP/1.0 request (server.py makes one of these for it). Never chunked: RFC 9112 6.1 forbids
    Transfer-Encoding in an answer to HTTP/1.0, whose client would read the chunks' framing as the body (uvicorn
    sends it anyway). A body without a Content-Length (an export) goes out as it comes and ends with the connection,
    which HTTP/1.0 closes after every response here (server.py: no keep-alive for 1.0)."""

    _until_close = False  # the body's end is the connection's close

    def send(self, message: Any) -> Any:  # type: ignore[override]
        if message["type"] == "http.response.start" and not self.response_started:
            headers = [h for h in message.get("headers", ()) if bytes(h[0]).lower() != b"transfer-encoding"]
            if (
                not any(bytes(h[0]).lower() == b"content-length" for h in headers)
                and self.scope["method"] != "HEAD"
                and message["status"] not in (204, 304)
            ):
                self._until_close = True
                self.chunked_encoding = False  # (so neither head writer adds Transfer-Encoding)
            return Cycle.send(self, {**message, "headers": headers})
        if self._until_close and message["type"] == "http.response.body" and not self.response_complete:
            return self._write_until_close(message)
        return Cycle.send(self, message)

    def abort(self) -> None:
        if self._until_close:  # (no end of its own: a close would look like it)
            reset(self.transport)
        else:
            self.transport.abort()

    async def run_asgi(self, app: Any) -> None:
        await super().run_asgi(app)
        if self._until_close and not self.response_complete and not self.disconnected:
            # The body ended early (the app failed after the head): uvicorn's graceful close would look to this
            # client like the body's end. A reset says it was cut (HTTP/1.1's chunked body says it by its end).
            self.abort()

    async def _write_until_close(self, message: Any) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()  # (back-pressure, as uvicorn's send waits)
        if self.disconnected:
            return
        body = _joined(message).get("body", b"")
        if body:
            self.transport.write(body)
        if not message.get("more_body", False):
            self._complete()


def reset(transport: Any) -> None:
    """Drop the connection at once, unsent bytes and all, with a reset (SO_LINGER 0), not the FIN of a close: a
    response cut short must not look ended to the client."""
    get_extra_info = getattr(transport, "get_extra_info", None)
    sock = get_extra_info("socket") if get_extra_info is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _joined(message: Any) -> Any:
    """``message`` as uvicorn's ``send`` takes it: a body of BUFFERS joined."""
    buffers = message.get(BUFFERS)
    return message if buffers is None else {**message, "body": b"".join(buffers)}
