"""Fixtures of the command-line tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's waits between attempts (openkvs/client/http.py ``wait_time``) not waited, for a command run in
    this process that gives up on an address where nothing listens: its retries and its last message are what such
    a test checks, and the back-off made each of them sleep 1.5-3 s for nothing. The waits asked for are listed."""
    from openkvs.client import download, http, localdataset, localstore

    asked: list[float] = []
    real = http.wait_time

    def wait_time(response: object, attempt: int) -> float:
        asked.append(real(response, attempt))  # type: ignore[arg-type]
        return 0.0

    for module in (http, download, localstore, localdataset):
        monkeypatch.setattr(module, "wait_time", wait_time)
    return asked
