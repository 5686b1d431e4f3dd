"""A TCP forwarder that a test can cut, slow down or make lose a message, between a client and a server it
doesn't stop (other tests use it): ``down()`` makes the server unreachable (open connections reset, new ones
refused), ``rate`` passes the server's answers slowly (a download through it takes long enough to be interrupted
midway on any machine), and a subclass's ``relay`` decides what goes through (a message lost, a connection cut
midway, a byte changed on the wire)."""

from __future__ import annotations

import socket
import threading
import time

from tests.conftest import free_port


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, rate: int = 0) -> None:
        self.target = (target_host, target_port)
        self.rate = rate  # bytes a second of the server's answers on connections opened from now on (0: no limit)
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.forwarded = 0  # bytes from the target to clients, so far
        self.connections = 0  # accepted so far
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and reset the open ones."""
        with self._lock:
            ls, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        # shutdown() first: close() alone does not end a socket that another thread is blocked on (the forwarding
        # threads' recv, the accept loop), so the peer kept a silent connection and waited out its read timeout
        # (30 s for openkvs's S3 client) instead of seeing the outage at once.
        if ls is not None:
            try:
                ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ls.close()
        for c in conns:
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not ls:
                    client.close()
                    server.close()
                    return
                self._conns += [client, server]
            # Pieces forwarded as they come, not held back by Nagle until the peer's delayed ACK (40 ms each).
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections += 1
            conn: dict[str, int] = {"number": self.connections}  # and what ``relay`` keeps about this connection
            threading.Thread(target=self._pipe, args=(client, server, True, conn, 0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False, conn, self.rate), daemon=True).start()

    def relay(self, data: bytes, asking: bool, conn: dict[str, int]) -> tuple[bytes, bool]:
        """What of ``data`` goes on (from the client if ``asking``, else the server's answer), and whether the
        connection stays open after it: closed (both ends), as a network that fails there."""
        return data, True

    def _pipe(self, src: socket.socket, dst: socket.socket, asking: bool, conn: dict[str, int], rate: int) -> None:
        try:
            while data := src.recv(16384 if rate else 1 << 16):
                data, open_ = self.relay(data, asking, conn)
                if data:
                    dst.sendall(data)
                if not asking:
                    self.forwarded += len(data)
                if not open_:
                    break
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
