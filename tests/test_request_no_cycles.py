"""A served request leaves no reference cycle behind: its scope, uvicorn's request cycle and what they hold are
freed by reference counting as the response ends, not by the garbage collector. (Observe kept uvicorn's ``send``,
a method of the request cycle, in the scope the cycle holds: ~11 objects a request for the collector, whose
collections every few requests cost a served GET ~10k instructions, BENCHMARKS.md.)"""

from __future__ import annotations

import gc
import socket
from urllib.parse import urlsplit

from tests.conftest import Server
from tests.test_server_one_write import Reader, request


def test_a_served_get_leaves_no_garbage(sqlite_server: Server) -> None:
    with sqlite_server.client() as c:
        store = c.post("/v2/key-value-stores", params={"name": "no-cycles"}).json()["data"]["id"]
        path = f"/v2/key-value-stores/{store}/records/k"
        assert c.put(path, content=b"r" * 1024).status_code == 201
    # over a socket: the in-process server's client calls the app without uvicorn
    with socket.create_connection(("127.0.0.1", urlsplit(sqlite_server.url).port), timeout=30) as sock:
        reader = Reader(sock)
        sock.sendall(request(sqlite_server, "GET", path))
        assert reader.response()[::2] == (200, b"r" * 1024)
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds unreachable is kept in gc.garbage, to be looked at
        try:
            for _ in range(20):
                sock.sendall(request(sqlite_server, "GET", path))
                assert reader.response()[::2] == (200, b"r" * 1024)
            gc.collect()
            left = [o for o in gc.garbage if type(o).__name__ == "RequestResponseCycle"
                    or isinstance(o, dict) and "openkvs.request_id" in o]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert left == []
