"""Which requests the owner's short record GET path (openkvs.api.records._owner_plain_get) answers itself, and
that it sends nothing when it leaves a request to the general path. In process, on the ASGI app with SQLite;
that both paths give the same answers over a real socket is tests/api/test_records.py's job."""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import anyio
import pytest

from openkvs import auth
from openkvs.api.common import AppState
from openkvs.api.records import _owner_plain_get
from openkvs.app import create_app
from openkvs.config import Settings

from .storage.conftest import Body, chunked

pytestmark = pytest.mark.anyio


@pytest.fixture
async def app_state(tmp_path: Path):
    """The app's state after its lifespan started: a user with a cached token, a store, some records."""
    app = create_app(Settings.load({"data_dir": str(tmp_path), "rate_limits": "off"}))
    send_in, receive_in = anyio.create_memory_object_stream[dict[str, Any]](10)
    send_out, receive_out = anyio.create_memory_object_stream[dict[str, Any]](10)
    scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with anyio.create_task_group() as tg:
        tg.start_soon(app, scope, receive_in.receive, send_out.send)
        await send_in.send({"type": "lifespan.startup"})
        assert (await receive_out.receive())["type"] == "lifespan.startup.complete"
        st: AppState = scope["state"]["openkvs"]
        yield st, scope["state"]
        await send_in.send({"type": "lifespan.shutdown"})
        await receive_out.receive()


async def owner_and_records(st: AppState) -> dict[str, Any]:
    storage = st.storage
    alice, bob = await storage.create_user("alice"), await storage.create_user("bob")
    tokens = {}
    for user in (alice, bob):
        tokens[user.username] = auth.new_token()
        await storage.add_token(user.id, auth.hash_token(tokens[user.username]))
        await st.tokens.user(tokens[user.username])  # the cache now holds it
    store = await storage.create_store(alice.id, "s", None, auth.new_signing_key())
    for key, data in (("small", b"hello"), ("big", os.urandom(64 * 1024 + 1))):
        await storage.put_record(store.id, key, Body(chunked(data)), "text/plain", None)
    gz = zlib.compress(b"x" * 1000)
    await storage.put_record(store.id, "encoded", Body([gz]), "text/plain", "deflate")
    return {"store": store, "tokens": tokens}


async def attempt(state: dict[str, Any], store_ref: str, key: str, token: str | None, *, method: str = "GET",
                  query: bytes = b"", extra: list[tuple[bytes, bytes]] | None = None) -> tuple[bool, list]:
    headers = [(b"host", b"test"), *(extra or [])]
    if token is not None:
        headers.append((b"authorization", b"Bearer " + token.encode()))
    scope = {"type": "http", "method": method, "path": f"/v2/key-value-stores/{store_ref}/records/{key}",
             "query_string": query, "headers": headers, "state": dict(state),
             "path_params": {"store_id": store_ref, "key": key}}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return await _owner_plain_get(scope, receive, send), sent


async def test_the_owners_plain_get_of_a_small_record_is_answered_here(app_state) -> None:
    st, state = app_state
    d = await owner_and_records(st)
    answered, sent = await attempt(state, d["store"].id, "small", d["tokens"]["alice"])
    assert answered
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"hello"
    assert (b"content-length", b"5") in sent[0]["headers"]


async def test_everything_else_is_left_to_the_general_path_untouched(app_state) -> None:
    st, state = app_state
    d = await owner_and_records(st)
    sid, alice = d["store"].id, d["tokens"]["alice"]
    cases = {
        "another user": (sid, "small", d["tokens"]["bob"], {}),
        "no token": (sid, "small", None, {}),
        "a token not in the cache": (sid, "small", auth.new_token(), {}),
        "a query string": (sid, "small", alice, {"query": b"attachment=1"}),
        "a signature": (sid, "small", alice, {"query": b"signature=x"}),
        "HEAD": (sid, "small", alice, {"method": "HEAD"}),
        "a Range": (sid, "small", alice, {"extra": [(b"range", b"bytes=0-1")]}),
        "If-None-Match": (sid, "small", alice, {"extra": [(b"if-none-match", b'"x"')]}),
        "If-Range": (sid, "small", alice, {"extra": [(b"if-range", b'"x"')]}),
        "the store by name": ("~s", "small", alice, {}),
        "a missing record": (sid, "nope", alice, {}),
        "a missing store": ("NoSuchStore000000", "small", alice, {}),
        "a big record": (sid, "big", alice, {}),
        "an encoded record": (sid, "encoded", alice, {}),
        "a bad key": (sid, "..", alice, {}),
    }
    for what, (ref, key, token, kw) in cases.items():
        answered, sent = await attempt(state, ref, key, token, **kw)
        assert (answered, sent) == (False, []), what
