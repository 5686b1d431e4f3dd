"""Instructions of a record GET's two ``send`` calls through one request's cycle, without a server: uvicorn's
``RequestResponseCycle`` or openkvs/cycle.py's ``Cycle``, a fresh cycle a response, the 13 headers a record GET's
response has (the date, the record's, CORS, rate limit, a new request id each time) and a 1 KiB body, to a
transport that drops the bytes. ``none``: the cycles and messages made, nothing sent (what the others include).
``uvicorn`` as openkvs/server.py leaves it (run from an older checkout: with the header checks it patched).
Arguments: uvicorn|ours|none N. Per GET: (count at N=3000 - count at N=1000) / 2000.

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/cg_cycle.py ours 3000       # then 1000; read "Collected"
"""
import asyncio
import os
import subprocess
import sys
from typing import TYPE_CHECKING

sys.path.insert(0, os.getcwd())
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

import openkvs.server  # noqa: F401 - as served (before getapp, this import made uvicorn's header checks remember)
from openkvs.api.dispatch import CORS_EXPOSE_HEADERS

if TYPE_CHECKING:
    from uvicorn._types import HTTPResponseStartEvent

WHAT = sys.argv[1]
HEADERS = [
    (b"content-type", b"application/octet-stream"), (b"etag", b'"1234abcd-400-18c0a0b0c0d"'),
    (b"last-modified", b"Fri, 04 Dec 2026 20:00:00 GMT"), (b"content-length", b"1024"), (b"accept-ranges", b"bytes"),
    (b"x-content-type-options", b"nosniff"), (b"content-security-policy", b"sandbox"),
    (b"access-control-allow-origin", b"*"), (b"access-control-expose-headers", CORS_EXPOSE_HEADERS.encode()),
    (b"x-ratelimit-limit", b"200"),
]
DATE = [(b"date", b"Fri, 04 Dec 2026 20:00:00 GMT")]
BODY = b"r" * 1024


class Transport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


class Flow:
    write_paused = False


async def main() -> None:
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    cls: type[RequestResponseCycle]
    if WHAT == "ours":
        from openkvs.cycle import Cycle  # (only here: an older checkout, run for "uvicorn", may have none)

        cls = Cycle
    else:
        cls = RequestResponseCycle
    scope = {"type": "http", "method": "GET"}

    async def run(n: int) -> None:
        for i in range(n):
            # a partial scope, stand-ins for the transport and the flow, no loggers: only what send uses (no access
            # log, nothing fails)
            c = cls(scope, Transport(), Flow(), None, None, False, DATE, asyncio.Event(), False, True, lambda: None)  # type: ignore[arg-type]
            c.done = done  # type: ignore[attr-defined]  # Cycle's, which the protocol sets; unused by uvicorn's
            start: HTTPResponseStartEvent = {"type": "http.response.start", "status": 200,
                                             "headers": [*HEADERS, (b"x-request-id", b"5f0c19a2-%x" % i)]}
            if WHAT != "none":
                await c.send(start)
                await c.send({"type": "http.response.body", "body": BODY})

    await run(1000)
    subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True)
    await run(int(sys.argv[2]))
    subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], capture_output=True)
    os._exit(0)


asyncio.run(main())
