"""A TCP proxy that adds network latency: every chunk is forwarded rtt/2 after it arrives, in each direction.

Why: on loopback a request costs no round trip, so fetching records one by one looks far cheaper than it is
for a real client. The usual tool, ``tc qdisc ... netem delay``, is missing from this kernel ("Specified qdisc
kind is unknown"), so the delay is added here, in user space::

    python -m bench.netdelay --listen 8001 --to 127.0.0.1:8000 --rtt-ms 20

A request/response exchange through it costs one RTT more than direct; a new connection one RTT more again
(the TCP handshake: a client's first bytes are forwarded one RTT later than they would be on an open one).
The delay is constant, so order is kept: each direction is a queue of (due time, bytes) drained by one timer.
No bandwidth limit but the proxy's own speed (1 MiB reads); TCP slow start, loss and TLS are not modelled.
Back-pressure: a direction stops reading while it holds more than HIGH bytes (queued or in the writer's
buffer), so memory stays bounded; at 10 ms one way that caps a stream at HIGH / 10 ms (6.4 GiB/s).
Runs on uvloop when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib

READ_SIZE = 1 << 20  # bytes per read
HIGH = 64 << 20  # a direction stops reading above this many bytes held ...
LOW = HIGH // 2  # ... and reads again below this


class Half:
    """One direction: bytes read by ``src`` are written to ``dst`` ``delay`` seconds later, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, not_before: float = 0.0):
        self.loop, self.delay, self.not_before = loop, delay, not_before
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()  # None: end of stream
        self.queued = 0  # bytes in the queue
        self.src: End | None = None
        self.dst: End | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.paused = False

    def push(self, data: bytes | None) -> None:
        self.queue.append((max(self.loop.time(), self.not_before) + self.delay, data))
        self.queued += len(data) if data else 0
        self.arm()
        self.throttle()

    def arm(self) -> None:
        if self.timer is None and self.queue and self.dst is not None:
            self.timer = self.loop.call_at(self.queue[0][0], self.flush)

    def flush(self) -> None:
        self.timer = None
        assert self.dst is not None
        now, head = self.loop.time(), True  # the timer fired for the head: it is due (even a clock tick early)
        while self.queue and (head or self.queue[0][0] <= now):
            head = False
            _, data = self.queue.popleft()
            if data is None:
                self.dst.end_writing()
            else:
                self.queued -= len(data)
                if not self.dst.transport.is_closing():
                    self.dst.transport.write(data)
        self.arm()
        self.throttle()

    def throttle(self) -> None:
        if self.src is None or self.src.transport.is_closing():
            return
        dst = self.dst.transport if self.dst else None
        held = self.queued + (dst.get_write_buffer_size() if dst and not dst.is_closing() else 0)
        full = self.dst is not None and self.dst.writer_full
        if not self.paused and (held > HIGH or full):
            self.paused = True
            self.src.transport.pause_reading()
        elif self.paused and held < LOW and not full:
            self.paused = False
            self.src.transport.resume_reading()


class End(asyncio.BufferedProtocol):
    """One socket of a proxied connection: what it reads goes into ``out``; ``into`` writes to it."""

    transport: asyncio.Transport

    def __init__(self, out: Half, into: Half):
        self.out, self.into = out, into
        self.buf = memoryview(bytearray(READ_SIZE))
        self.read_done = self.write_done = self.writer_full = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport  # (uvloop's transports do not subclass asyncio.Transport)
        transport.set_write_buffer_limits(high=4 << 20)
        self.out.src = self.into.dst = self
        self.into.arm()  # bytes may have queued for this side before it was connected

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.out.push(bytes(self.buf[:nbytes]))

    def eof_received(self) -> bool:
        self.read_done = True
        self.out.push(None)  # pass the half-close on, after the bytes before it
        if self.write_done:
            self.transport.close()
        return True  # keep writing to this side

    def end_writing(self) -> None:
        self.write_done = True
        if self.transport.is_closing():
            return
        if self.read_done or not self.transport.can_write_eof():
            self.transport.close()  # after its buffered bytes
        else:
            self.transport.write_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.read_done:
            self.read_done = True
            self.out.push(None)
        self.write_done = True

    def pause_writing(self) -> None:
        self.writer_full = True
        self.into.throttle()

    def resume_writing(self) -> None:
        self.writer_full = False
        self.into.throttle()


async def serve(listen: int, host: str, port: int, rtt: float) -> None:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    def accept() -> End:
        up = Half(loop, rtt / 2, not_before=loop.time() + rtt)  # client -> server, after a "handshake" RTT
        down = Half(loop, rtt / 2)
        client = End(up, down)

        async def connect() -> None:
            try:
                await loop.create_connection(lambda: End(down, up), host, port)
            except OSError:
                client.transport.close()

        task = loop.create_task(connect())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return client

    server = await loop.create_server(accept, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.netdelay", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", type=int, required=True, help="port to listen on (127.0.0.1)")
    p.add_argument("--to", required=True, help="HOST:PORT to forward to")
    p.add_argument("--rtt-ms", type=float, required=True, help="round-trip time to add, half in each direction")
    args = p.parse_args()
    host, _, port = args.to.rpartition(":")
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen, host, int(port), args.rtt_ms / 1000))


if __name__ == "__main__":
    main()
