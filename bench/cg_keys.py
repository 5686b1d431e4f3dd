"""Instructions per GET /v2/key-value-stores/{id}/keys of 1000 keys (the app called directly, SQLite), for a machine
too busy for timings: run under callgrind with instrumentation off; after a warm-up this script turns it on
(callgrind_control) for N requests only; also prints the answer's size. Run from the tree to measure (its bench/
and, with PYTHONPATH=that tree, its openkvs):

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/cg_keys.py 20        # read "Collected"; per request: / 20
"""

import asyncio
import os
import subprocess
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.getcwd())

from starlette.types import Message

import openkvs
from bench.cpu_get import _collect, _scope
from bench.harness import Body
from openkvs import auth
from openkvs.app import create_app
from openkvs.config import Settings
from openkvs.storage.sqlite import SQLiteStorage

N = int(sys.argv[1])


async def main() -> None:
    storage = SQLiteStorage(tempfile.mkdtemp(prefix="okvs-cgk-"))
    app = create_app(Settings.load({"rate_limits": "off"}), storage)
    lifespan: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    q: asyncio.Queue[Message] = asyncio.Queue()
    out: asyncio.Queue[Message] = asyncio.Queue()
    task = asyncio.ensure_future(app(lifespan, q.get, out.put))  # noqa: F841 - kept referenced while the app runs
    await q.put({"type": "lifespan.startup"})
    await out.get()
    user = await storage.create_user("bench")
    token = auth.new_token()
    await storage.add_token(user.id, auth.hash_token(token))
    store = await storage.create_store(user.id, "bench", None, auth.new_signing_key())
    for i in range(1000):
        await storage.put_record(store.id, f"key-{i:05d}", Body(b"r" * 100), "application/json; charset=utf-8", None)
    scope = _scope(f"/v2/key-value-stores/{store.id}/keys", token, dict(lifespan["state"]))
    for _ in range(10):
        messages = await _collect(app, scope)
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True)
    for _ in range(N):
        await _collect(app, scope)
    subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], capture_output=True)
    print(openkvs.__file__, "answer bytes", len(body), flush=True)
    os._exit(0)


asyncio.run(main())
