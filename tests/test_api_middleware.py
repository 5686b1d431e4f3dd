"""ApiMiddleware, the one place where errors become the API's JSON answers (in process, on a bare ASGI app)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from openkvs.app import ApiMiddleware
from openkvs.config import Settings
from openkvs.storage.base import NotFound, StorageError, StorageUnavailable, UsernameTaken

pytestmark = pytest.mark.anyio


async def answer(exc: BaseException) -> tuple[int, dict[bytes, bytes], dict[str, Any]]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise exc

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v2/x", "headers": []}
    await ApiMiddleware(app, Settings())(scope, None, send)
    return sent[0]["status"], dict(sent[0]["headers"]), json.loads(sent[1]["body"])


@pytest.mark.parametrize(
    "exc, status, kind",
    [
        (NotFound("x"), 404, "record-not-found"),
        (StorageUnavailable("x"), 503, None),
        (UsernameTaken("x"), 500, "internal-server-error"),  # no API error names it: as unexpected as any bug
        (StorageError("x"), 500, "internal-server-error"),
        (ValueError("x"), 500, "internal-server-error"),
    ],
)
async def test_errors_become_json_with_the_common_headers(exc, status, kind, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="openkvs")
    got_status, headers, body = await answer(exc)
    assert got_status == status
    assert headers[b"access-control-allow-origin"] == b"*" and b"x-ratelimit-limit" in headers
    if kind is not None:
        assert body["error"]["type"] == kind
    if status == 500:  # the answer names a request id, and the log has the traceback under it
        request_id = body["error"]["message"].split("request id ")[1].rstrip(").")
        assert any(request_id in r.getMessage() and r.exc_info for r in caplog.records), caplog.records
