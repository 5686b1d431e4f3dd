"""The client pointed (--url) at a server that answers what the API never gives: bodies that are not JSON or not
the API's, an answer or an error body too large to hold, a jsonl export that never ends a line or sends more items
than the dataset holds, a key listing that never advances, messages with escape sequences. Each command ends with
one line and exit status 1, never a traceback; and local problems (a hostile import folder, a file in the way)
likewise."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from openkvs.client import http, localdataset
from tests.clirun import Ran, openkvs_here

Body = bytes | Iterator[bytes]
Route = Callable[[str, str], tuple[int, Body] | None]  # (method, path) -> (status, body), None: 404


class FakeServer:
    """An HTTP server on port 0 whose answers ``route`` makes up: each with Connection: close and no length (the
    body ends with the connection), so a body can be of any size and made as it is sent."""

    def __init__(self, route: Route) -> None:
        self.requests: list[str] = []
        self.finished: list[str] = []  # the paths whose whole body was sent
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                path = urlsplit(self.path).path
                outer.requests.append(f"{self.command} {path}")
                found = route(self.command, path)
                status, body = found or (404, b'{"error":{"type":"record-not-found","message":"no"}}')
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command == "HEAD":
                    return
                try:
                    for chunk in [body] if isinstance(body, bytes) else body:
                        self.wfile.write(chunk)
                except OSError:  # (the client stopped reading)
                    return
                outer.finished.append(path)

            do_GET = do_POST = do_PUT = do_HEAD = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Route], FakeServer]]:
    servers: list[FakeServer] = []

    def start(route: Route) -> FakeServer:
        servers.append(FakeServer(route))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _run(server: FakeServer, *args: str) -> Ran:
    return openkvs_here(*args, "--quiet", env={"OPENKVS_URL": server.url, "OPENKVS_TOKEN": "t"},
                        unset=("OPENKVS_", "APIFY_"), keep=())


def _one_line_error(out: Ran, *expected: str) -> str:
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), out.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _data(value: Any) -> bytes:
    return json.dumps({"data": value}).encode()


STORE = {"id": "s1", "name": "s1", "accessedAt": "2024-01-01T00:00:00.000Z", "createdAt": "2024-01-01T00:00:00.000Z",
         "modifiedAt": "2024-01-01T00:00:00.000Z"}
NO_KEYS = _data({"items": [], "isTruncated": False})
BAD = {"not JSON": b"<html>hello</html>", "no data": b'{"hello":1}', "deep": b"[" * 100_000,
       "a 5000-digit number": b'{"data":' + b"9" * 5000 + b"}"}


def _commands(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """Each command, and the path whose answer it parses first."""
    (tmp_path / "up").mkdir(exist_ok=True)
    (tmp_path / "up" / "a.txt").write_text("a")
    out = str(tmp_path / "out")
    return {
        "export": (["export", "s1", out], "/v2/key-value-stores/s1"),
        "export --dataset": (["export", "--dataset", "d1", out], "/v2/datasets/d1"),
        "export --queue": (["export", "--queue", "q1", out], "/v2/request-queues/q1"),
        "upload": (["upload", str(tmp_path / "up"), "s1"], "/v2/key-value-stores/s1/keys"),
    }


@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("command", ["export", "export --dataset", "export --queue", "upload"])
def test_an_answer_not_the_apis_is_one_line(serve: Callable[[Route], FakeServer], tmp_path: Path, command: str,
                                            bad: str) -> None:
    args, path = _commands(tmp_path)[command]
    server = serve(lambda method, p: (200, BAD[bad]) if p == path else (200, _data(STORE)))
    _one_line_error(_run(server, *args), "the server's answer is not what the API gives")


def test_a_time_that_is_no_time_is_one_line(serve: Callable[[Route], FakeServer], tmp_path: Path) -> None:
    info = {**STORE, "itemCount": 0, "accessedAt": "garbage"}
    server = serve(lambda method, p: (200, _data(info)) if p == "/v2/datasets/d1" else None)
    _one_line_error(_run(server, "export", "--dataset", "d1", str(tmp_path / "out")),
                    "dataset d1: the server's answer is not what the API gives: ValueError")


def _dataset(count: int, items: Body) -> Route:
    def route(method: str, path: str) -> tuple[int, Body] | None:
        if path == "/v2/datasets/d1":
            return 200, _data({**STORE, "itemCount": count})
        if path == "/v2/datasets/d1/items":
            return 200, items
        return None

    return route


@pytest.mark.parametrize("line", [b"garbage", b"9" * 5000, b"[" * 100_000], ids=["garbage", "digits", "deep"])
def test_a_jsonl_line_not_json_is_one_line(serve: Callable[[Route], FakeServer], tmp_path: Path,
                                           line: bytes) -> None:
    server = serve(_dataset(1, line + b"\n"))
    _one_line_error(_run(server, "export", "--dataset", "d1", str(tmp_path / "out")),
                    "exporting d1: item 1: the server's answer is not what the API gives")


def test_more_items_than_the_dataset_holds_are_refused(serve: Callable[[Route], FakeServer], tmp_path: Path) -> None:
    server = serve(_dataset(1, b'{"a":1}\n' * 1000))
    _one_line_error(_run(server, "export", "--dataset", "d1", str(tmp_path / "out")),
                    "exporting d1: the server's answer is not what the API gives: more than the 1 items")
    assert len(list((tmp_path / "out").rglob("0*.json"))) <= 1


def test_a_line_that_never_ends_is_cut_at_an_items_size(serve: Callable[[Route], FakeServer], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localdataset, "MAX_ITEM_FILE", 100_000)
    server = serve(_dataset(1, iter([b"x" * 10_000] * 10_000)))  # 100 MB with no newline
    _one_line_error(_run(server, "export", "--dataset", "d1", str(tmp_path / "out")),
                    "exporting d1: the server's answer is not what the API gives: item 1 is over 100,000 bytes")
    assert "/v2/datasets/d1/items" not in server.finished


def test_an_answer_too_large_is_refused_without_reading_it_all(serve: Callable[[Route], FakeServer], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "MAX_ANSWER", 1 << 20)
    server = serve(lambda method, p: (200, iter([b" " * 65536] * 2048)))  # 128 MiB
    _one_line_error(_run(server, "export", "s1", str(tmp_path / "out")),
                    "store s1: the server's answer is not what the API gives: over 1,048,576 bytes")
    assert "/v2/key-value-stores/s1" not in server.finished


def test_an_error_body_too_large_is_not_read(serve: Callable[[Route], FakeServer], tmp_path: Path) -> None:
    body = iter([b'{"error":{"type":"x","message":"' + b"y" * 65536, *[b"y" * 65536] * 2048, b'"}}'])
    server = serve(lambda method, p: (403, body))
    _one_line_error(_run(server, "export", "s1", str(tmp_path / "out")), "store s1: HTTP 403 Forbidden")
    assert "/v2/key-value-stores/s1" not in server.finished


def test_a_servers_message_is_shown_with_its_control_characters_escaped(serve: Callable[[Route], FakeServer],
                                                                       tmp_path: Path) -> None:
    message = "line one\nline two \x1b[31mred\x1b]0;title\x07 \u202eevil"
    body = json.dumps({"error": {"type": "insufficient-permissions", "message": message}}).encode()
    server = serve(lambda method, p: (403, body))
    line = _one_line_error(_run(server, "export", "s1", str(tmp_path / "out")))
    assert "\x1b" not in line and "\x07" not in line and "\u202e" not in line
    assert r"line one\nline two \x1b[31mred\x1b]0;title\x07 \u202eevil" in line, line


def _listing(suffix: str, page: bytes, others: Route) -> tuple[Route, list[int]]:
    """A server's route whose listing (paths ending in ``suffix``) gives ``page`` every time, and what it was
    asked; after 50 asks an error, the test's own stop, so that a client looping fails rather than hangs."""
    listings: list[int] = []

    def route(method: str, path: str) -> tuple[int, Body] | None:
        if path.endswith(suffix):
            listings.append(1)
            return (400, b'{"error":{"type":"x","message":"looped"}}') if len(listings) > 50 else (200, page)
        return others(method, path)

    return route, listings


def test_a_key_listing_that_does_not_advance_is_refused(serve: Callable[[Route], FakeServer], tmp_path: Path) -> None:
    page = _data({"items": [{"key": "a", "size": 1}], "isTruncated": True, "nextExclusiveStartKey": "a"})
    route, listings = _listing("/keys", page, lambda method, path: (200, _data(STORE)))
    server = serve(route)
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "b.txt").write_text("b")
    _one_line_error(_run(server, "upload", str(tmp_path / "up"), "s1"),
                    "listing s1: the server's answer is not what the API gives: the next page starts after 'a' again")
    assert len(listings) == 2


QUEUE = {**STORE, "id": "q1", "name": "q1"}


@pytest.mark.parametrize("page, expected", [
    ({"items": [{"uniqueKey": "a", "url": "https://e.com/a"}], "nextCursor": "c1"},
     "listing q1: the server's answer is not what the API gives: the next cursor 'c1' came before"),
    ({"items": [{"uniqueKey": 5, "url": "https://e.com/a"}]},
     "listing q1: the server's answer is not what the API gives: a request's uniqueKey is 5"),
    ({"items": "nope"}, "listing q1: the server's answer is not what the API gives: items is not a list"),
], ids=["cursor-again", "unique-key-not-text", "items-not-a-list"])
def test_a_queue_listing_not_the_apis_is_refused(serve: Callable[[Route], FakeServer], tmp_path: Path,
                                                 page: dict[str, Any], expected: str) -> None:
    route, listings = _listing("/requests", _data(page), lambda method, path: (
        200, _data({"items": []}) if path.endswith("/head") else _data(QUEUE)))
    server = serve(route)
    _one_line_error(_run(server, "export", "--queue", "q1", str(tmp_path / "out")), expected)
    assert len(listings) <= 2


@pytest.mark.parametrize("place", ["key_value_stores", "key_value_stores/s1"])
def test_a_file_in_the_way_of_the_export_folder_is_one_line(serve: Callable[[Route], FakeServer], tmp_path: Path,
                                                           place: str) -> None:
    server = serve(lambda method, p: (200, NO_KEYS) if p.endswith("/keys") else (200, _data(STORE)))
    (tmp_path / "out" / place).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "out" / place).write_text("in the way")
    line = _one_line_error(_run(server, "export", "s1", str(tmp_path / "out")), "is in the way (not a folder)")
    assert f"Error: {tmp_path / 'out' / place} is in the way" in line and "nothing was written" in line


@pytest.mark.parametrize(("name", "expected"), ids=["superscript", "huge", "deep"], argvalues=[
    ("².json", "².json: not an item file"),
    ("99999999999999999999999.json", "99999999999999999999999.json: item number over"),
    ("000000002.json", "000000002.json: JSON nested too deeply"),
])
def test_a_hostile_item_file_is_named(serve: Callable[[Route], FakeServer], tmp_path: Path, name: str,
                                      expected: str) -> None:
    server = serve(lambda method, p: None)
    folder = tmp_path / "storage" / "datasets" / "d1"
    folder.mkdir(parents=True)
    (folder / "000000001.json").write_text('{"a":1}')
    (folder / name).write_text('{"a":' * 100_000 + "1" + "}" * 100_000 if "nested" in expected else '{"a":2}')
    out = _run(server, "import", str(tmp_path / "storage"))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert expected in out.stderr, out.stderr
    assert server.requests == []
