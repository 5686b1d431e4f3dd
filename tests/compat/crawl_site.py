"""A small website for the crawler tests, served on 127.0.0.1 (no internet here): ``/page/0`` ... ``/page/{n-1}``,
each linking to a few others, with duplicate links (the same page twice on one page, and page 0 everywhere), so a
crawl must deduplicate to visit each page once. The server counts the fetches of each page: the ground truth of
how often a crawler visited it."""

from __future__ import annotations

import collections
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def links(i: int, n: int) -> list[int]:
    """Page i's links: the next page twice, two far ones and the first page: all pages are reachable from 0."""
    return [(i + 1) % n, (i + 1) % n, (i * 7) % n, (i * 13 + 5) % n, 0]


class Site:
    def __init__(self, n: int) -> None:
        self.n = n
        self.hits: collections.Counter[str] = collections.Counter()
        self.times: dict[str, list[float]] = collections.defaultdict(list)  # time.monotonic() of each fetch
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                if len(parts) != 2 or parts[0] != "page" or not parts[1].isdigit() or int(parts[1]) >= site.n:
                    self.send_error(404)
                    return
                i = int(parts[1])
                with site._lock:
                    site.hits[str(i)] += 1
                    site.times[str(i)].append(time.monotonic())
                anchors = "".join(f'<a href="/page/{j}">page {j}</a> ' for j in links(i, site.n))
                body = f"<html><head><title>Page {i}</title></head><body>{anchors}</body></html>".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Site:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
