"""openkvs/cycle.py's ``Cycle`` writes what uvicorn's ``RequestResponseCycle`` writes, and refuses what it refuses:
each response below is sent through both, message by message, and what reaches the transport (bytes, close), what
``send`` raises and the cycle's framing state after each message are compared. Twice through ``Cycle``: the second
time its header lines are the remembered ones."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from openkvs import cycle
from openkvs.cycle import BUFFERS, LINES_KEPT, Cycle

DATE = [(b"date", b"Fri, 04 Dec 2026 20:00:00 GMT")]
CORS = [(b"access-control-allow-origin", b"*"), (b"x-ratelimit-limit", b"200")]


def start(status: int, headers: list[Any]) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": headers}


def body(data: bytes = b"", more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


# name -> (request method, keep-alive, messages)
CASES: dict[str, tuple[str, bool, list[dict[str, Any]]]] = {
    "content-length, one piece": ("GET", True, [start(200, [(b"content-length", b"3"), *CORS]), body(b"abc")]),
    "content-length, two pieces": (
        "GET", True, [start(200, [(b"Content-Length", b"4"), *CORS]), body(b"ab", True), body(b"cd")]),
    "empty more_body first": ("GET", True, [start(200, [(b"content-length", b"2")]), body(b"", True), body(b"ok")]),
    "no length: chunked": ("GET", True, [start(200, CORS), body(b"abc", True), body(b"de", True), body()]),
    "chunked, an empty piece first": ("GET", True, [start(200, CORS), body(b"", True), body(b"abc", True), body()]),
    "chunked, the last piece with bytes": ("GET", True, [start(200, CORS), body(b"abc", True), body(b"de")]),
    "chunked, memoryviews": ("GET", True, [start(200, CORS), body(memoryview(b"abcdef")[2:], True), body()]),
    "chunked, not kept alive": ("GET", False, [start(200, CORS), body(b"abc", True), body()]),
    "chunked, one piece of 1 MiB": ("GET", True, [start(200, []), body(b"x" * (1 << 20), True), body()]),
    "HEAD, chunked named": ("HEAD", True, [start(200, [(b"transfer-encoding", b"chunked")]), body(b"", True), body()]),
    "chunked, after the end": ("GET", True, [start(200, CORS), body(b"abc"), body(b"de")]),
    "chunked named": ("GET", True, [start(200, [(b"Transfer-Encoding", b"Chunked")]), body(b"abc")]),
    "chunked then length": (
        "GET", True, [start(200, [(b"transfer-encoding", b"chunked"), (b"content-length", b"2")]), body(b"ok")]),
    "length, chunked, the length again": ("GET", True, [start(200, [
        (b"content-length", b"2"), (b"transfer-encoding", b"chunked"), (b"content-length", b"2")]), body(b"ok")]),
    "two lengths": ("GET", True, [start(200, [(b"content-length", b"2"), (b"content-length", b"9")]), body(b"ok")]),
    "length then chunked": (
        "GET", True, [start(200, [(b"content-length", b"2"), (b"transfer-encoding", b"chunked")]), body(b"ok")]),
    "upper-case names": ("GET", True, [start(200, [(b"X-Test", b"V"), (b"CONTENT-LENGTH", b"1")]), body(b"x")]),
    "a request id": ("GET", True, [start(200, [(b"content-length", b"1"), (b"x-request-id", b"5f0c-1f")]),
                                   body(b"x")]),
    "a bad request id": ("GET", True, [start(200, [(b"x-request-id", b"1\r\nx: y")]), body(b"")]),
    "HEAD": ("HEAD", True, [start(200, [(b"content-length", b"1024"), *CORS]), body()]),
    "HEAD without length": ("HEAD", True, [start(200, CORS), body()]),
    "204": ("DELETE", True, [start(204, CORS), body()]),
    "304": ("GET", True, [start(304, [(b"etag", b'"x"'), *CORS]), body()]),
    "connection: close": (
        "GET", True, [start(200, [(b"content-length", b"1"), (b"Connection", b"keep-alive, Close")]), body(b"x")]),
    "connection: keep-alive": (
        "GET", True, [start(200, [(b"content-length", b"1"), (b"connection", b"keep-alive")]), body(b"x")]),
    "not kept alive": ("GET", False, [start(200, [(b"content-length", b"1")]), body(b"x")]),
    "list pairs": ("GET", True, [start(200, [[b"content-length", b"1"], [b"x-a", b"b"]]), body(b"x")]),
    "a bytearray value": ("GET", True, [start(200, [(b"content-length", b"1"), (b"x-a", bytearray(b"b"))]),
                                        body(b"x")]),
    "a memoryview body": ("GET", True, [start(200, [(b"content-length", b"3")]), body(memoryview(b"abc"))]),
    "body longer than its length": ("GET", True, [start(200, [(b"content-length", b"2")]), body(b"abc")]),
    "body shorter than its length": ("GET", True, [start(200, [(b"content-length", b"4")]), body(b"abc")]),
    "bad name": ("GET", True, [start(200, [*CORS, (b"x test", b"v")]), body(b"")]),
    "bad value (CR LF)": ("GET", True, [start(200, [*CORS, (b"x-test", b"a\r\nset-cookie: e=1")]), body(b"")]),
    "bad value (control)": ("GET", True, [start(200, [(b"x-test", b"a\x01b")]), body(b"")]),
    "bad length": ("GET", True, [start(200, [(b"content-length", b"x")]), body(b"")]),
    "unknown status": ("GET", True, [start(700, [(b"x test", b"v")]), body(b"")]),
    "body first": ("GET", True, [body(b"x"), start(200, [])]),
    "start twice": ("GET", True, [start(200, [(b"content-length", b"0")]), start(200, [])]),
    "after the end": ("GET", True, [start(200, [(b"content-length", b"1")]), body(b"x"), body(b"y")]),
    "no headers key": ("GET", True, [{"type": "http.response.start", "status": 200}, body(b"x", True), body()]),
}


class Transport:
    def __init__(self) -> None:
        self.out: list[Any] = []

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))

    def writelines(self, parts: tuple[bytes, ...]) -> None:  # (the bytes that reach the socket: one write's)
        self.out.append(b"".join(parts))

    def close(self) -> None:
        self.out.append("close")

    def is_closing(self) -> bool:
        return "close" in self.out


class Flow:
    write_paused = False


async def run(cls: type[RequestResponseCycle], method: str, keep_alive: bool,
              messages: list[dict[str, Any]]) -> list[Any]:
    """What sending ``messages`` through a cycle of class ``cls`` did, message by message."""
    transport = Transport()
    responses: list[int] = []
    c = cls(
        scope={"type": "http", "method": method},  # type: ignore[typeddict-item]
        transport=transport,  # type: ignore[arg-type]
        flow=Flow(),  # type: ignore[arg-type]
        logger=None,  # type: ignore[arg-type]
        access_logger=None,  # type: ignore[arg-type]
        access_log=False,
        default_headers=DATE,
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: responses.append(1),
    )
    c.done = asyncio.get_running_loop().create_future()  # type: ignore[attr-defined]
    c.done.set_result(None)  # type: ignore[attr-defined]
    seen: list[Any] = []
    for message in messages:
        transport.out = []
        try:
            await c.send(message)  # type: ignore[arg-type]
            raised = None
        except Exception as exc:  # (what it raises is compared)
            raised = (type(exc), str(exc))
        state = (c.response_started, c.response_complete, c.keep_alive, c.chunked_encoding,
                 c.expected_content_length, c.message_event.is_set(), len(responses))
        seen.append((transport.out, raised, state))
    return seen


@pytest.mark.parametrize("case", list(CASES))
def test_what_uvicorns_cycle_does(case: str) -> None:
    method, keep_alive, messages = CASES[case]

    async def both() -> None:
        cycle.forget()
        expected = await run(RequestResponseCycle, method, keep_alive, messages)
        assert await run(Cycle, method, keep_alive, messages) == expected  # header lines checked and remembered
        assert await run(Cycle, method, keep_alive, messages) == expected  # and with the remembered ones

    asyncio.run(both())


def test_a_bad_header_is_never_remembered() -> None:
    bad = (b"x-test", b"a\r\nset-cookie: e=1")

    async def refused() -> None:
        for _ in range(3):
            (out, raised, _), _body = await run(Cycle, "GET", True, [start(200, [*CORS, bad]), body()])
            assert (out, raised) == ([], (RuntimeError, "Invalid HTTP header value."))
        assert bad not in cycle.remembered() and CORS[0] in cycle.remembered()

    asyncio.run(refused())


def test_the_remembered_are_bounded() -> None:
    async def many() -> None:
        for i in range(3 * LINES_KEPT):  # a value per response (a request id)
            await run(Cycle, "GET", True, [start(200, [(b"x-request-id", b"%d" % i)]), body()])
            assert len(cycle.remembered()) <= LINES_KEPT
        # a connection header, whose effect depends on the response, is never held, nor a request id (new on
        # every response); a content-length with its length
        await run(Cycle, "GET", True, [start(200, [(b"content-length", b"0"), (b"connection", b"close"),
                                                   (b"X-Request-Id", b"1-1")]), body()])
        held = cycle.remembered()
        assert not {name.lower() for name, _ in held} & {b"connection", b"x-request-id"}
        assert held[(b"content-length", b"0")] == b"content-length: 0\r\n"
        for i in range(3 * LINES_KEPT):  # a length per response
            await run(Cycle, "GET", True, [start(200, [(b"content-length", b"%d" % i)]), body(b"x" * i)])
            assert len(cycle.remembered()) <= 2 * LINES_KEPT

    asyncio.run(many())


def buffered(parts: list[Any], more: bool = False) -> dict[str, Any]:
    """A body message of cycle.BUFFERS: its bytes as a list of buffers (``body`` b"")."""
    return {"type": "http.response.body", "body": b"", BUFFERS: parts, "more_body": more}


ROWS = [b'{"i":1}', b"\n", memoryview(b'x{"i":2}')[1:], b"\n"]
BUFFERED: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "chunked": ("GET", [start(200, CORS), buffered(ROWS, True), body(b"z", True), body()]),
    "chunked, the last piece": ("GET", [start(200, CORS), buffered(ROWS)]),
    "content-length": ("GET", [start(200, [(b"content-length", b"16")]), buffered(ROWS)]),
    "content-length, longer": ("GET", [start(200, [(b"content-length", b"3")]), buffered(ROWS)]),
    "HEAD": ("HEAD", [start(200, CORS), buffered(ROWS, True), body()]),
    "after the end": ("GET", [start(200, CORS), body(b"abc"), buffered(ROWS)]),
    "buffers of no bytes": ("GET", [start(200, CORS), buffered([b"", memoryview(b"")], True), body(b"z", True),
                                    body()]),
}


@pytest.mark.parametrize("case", list(BUFFERED))
def test_buffers_are_written_as_their_bytes_joined(case: str) -> None:
    """A message of BUFFERS does what uvicorn's cycle does with its buffers joined into its body."""
    method, messages = BUFFERED[case]
    joined = [{**m, "body": b"".join(m[BUFFERS])} if BUFFERS in m else m for m in messages]

    async def both() -> None:
        cycle.forget()
        assert await run(Cycle, method, True, messages) == await run(RequestResponseCycle, method, True, joined)

    asyncio.run(both())


def test_buffers_reach_the_transport_as_they_are() -> None:
    """The buffers of a chunk go to one ``writelines`` as the same objects: not copied into one first."""

    class Writes(Transport):
        def writelines(self, parts: tuple[bytes, ...]) -> None:
            self.out.append(parts)

    async def send() -> tuple[Any, ...]:
        transport = Writes()
        scope: Any = {"type": "http", "method": "GET"}
        c = Cycle(scope=scope, transport=transport, flow=Flow(), logger=None, access_logger=None,  # type: ignore[arg-type]
                  access_log=False, default_headers=DATE, message_event=asyncio.Event(), expect_100_continue=False,
                  keep_alive=True, on_response=lambda: None)
        c.done = asyncio.get_running_loop().create_future()
        c.done.set_result(None)
        await c.send(start(200, CORS))
        transport.out = []
        await c.send(buffered(ROWS, True))
        (parts,) = transport.out
        return parts  # type: ignore[no-any-return]

    parts = asyncio.run(send())
    assert parts[0] == b"10\r\n" and parts[-1] == b"\r\n"
    assert all(a is b for a, b in zip(parts[1:-1], ROWS, strict=True))
