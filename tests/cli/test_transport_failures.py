"""A request that fails in transport (the connection refused, or lost with no answer) ends the same way in every
client command, however it reached the server: the plain API call (upload's, a listing), export's record fetch and
download's archive. Refused: three attempts and "cannot connect to URL"; lost: the retries, then "WHAT:
ErrorName: message", never an empty message."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from openkvs.client import download, http, localstore
from openkvs.client.progress import Progress

URL = "http://127.0.0.1:9"


def _client(error: type[httpx.TransportError], attempts: list[str]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        raise error("", request=request)  # (an OS error without text, as a reset can be)

    return httpx.Client(transport=httpx.MockTransport(handler), base_url=URL)


def _commands(tmp_path: Path) -> dict[str, Callable[[httpx.Client], object]]:
    def quiet(label: str, total: int | None, done: int) -> Progress:
        return Progress(label, total, done, quiet=True)

    return {
        "request": lambda c: http.request(c, "GET", "/v2/key-value-stores/s", "store s", sleep=lambda _: None),
        "export": lambda c: localstore._fetch(c, "/v2/key-value-stores/s/records/k", "record k", tmp_path / "k",
                                              quiet("k", None, 0)),
        "download": lambda c: download.download(c, "s", tmp_path / "s.zip", say=lambda _: None, progress=quiet,
                                                sleep=lambda _: None),
    }


@pytest.fixture(autouse=True)
def _no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda _: None)


@pytest.mark.parametrize("command", ["request", "export", "download"])
def test_a_refused_connection_is_three_attempts_then_cannot_connect(command: str, tmp_path: Path) -> None:
    attempts: list[str] = []
    with pytest.raises(http.ClientError) as raised:
        _commands(tmp_path)[command](_client(httpx.ConnectError, attempts))
    assert len(attempts) == http.CONNECT_RETRIES + 1
    assert f": cannot connect to {URL} (ConnectError); is the server running?" in str(raised.value), raised.value


@pytest.mark.parametrize("command", ["request", "export", "download"])
def test_a_lost_connection_is_every_retry_then_its_name(command: str, tmp_path: Path) -> None:
    attempts: list[str] = []
    with pytest.raises(http.ClientError) as raised:
        _commands(tmp_path)[command](_client(httpx.ReadError, attempts))
    assert len(attempts) == http.RETRIES + 1
    assert str(raised.value).endswith(": ReadError: connection failed"), raised.value
    assert not list(tmp_path.iterdir())  # nothing begun, nothing kept
