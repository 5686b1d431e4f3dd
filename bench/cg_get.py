"""Instructions per record GET, for a machine too busy for timings: run under callgrind with instrumentation
off; after a warm-up this script turns it on (callgrind_control) for N requests only. Per request:
(count at N=600 - count at N=200) / 400. The owner's GET of a 1 KiB record, the app called directly
(bench/cpu_get.py); arguments: N [bare]; env STUB=1 replays storage's answers, PG=1 uses BENCH_PG_URL,
DEFAULTS=1 the settings users run (rate limits on, raised above the load as bench/harness.py does; access log at
info and metrics on in both cases: the access log's lines go to standard output, send it to /dev/null); PUT=1 PUTs
of 1 KiB to the same keys instead, one after the other (SQLite's commit and the writer thread's hop are in the count).

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/cg_get.py 600        # then 200; read "Collected"
"""
import asyncio
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.getcwd())
import uvloop

from bench.cpu_get import _collect, _scope
from bench.harness import Body
from openkvs import auth
from openkvs.app import create_app
from openkvs.config import Settings

N = int(sys.argv[1])
BARE = len(sys.argv) > 2 and sys.argv[2] == "bare"


def _with_body(app):
    """``app`` called with a receive that gives a 1 KiB body (``_collect``'s gives none)."""
    async def receive():
        return {"type": "http.request", "body": b"p" * 1024, "more_body": False}

    async def call(scope, _receive, send):
        await app(scope, receive, send)
    return call


async def main():
    if os.environ.get("PG"):
        from openkvs.storage.postgres import PostgresStorage
        storage = PostgresStorage(os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
                                  namespace=f"bench_cg_{os.getpid()}")  # left behind: drop bench_cg_* after
    else:
        from openkvs.storage.sqlite import SQLiteStorage
        storage = SQLiteStorage(tempfile.mkdtemp(prefix="okvs-cg-"))
    if os.environ.get("DEFAULTS"):
        high = 1_000_000_000
        settings = Settings.load({"rate_limit_user_per_minute": high, "rate_limit_store_per_second": high,
                                  "rate_limit_records_per_second": high})
    else:
        settings = Settings.load({"rate_limits": "off"})
    app = create_app(settings, storage)
    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    q, out = asyncio.Queue(), asyncio.Queue()
    task = asyncio.create_task(app(lifespan, q.get, out.put))  # noqa: F841 - kept referenced while the app runs
    await q.put({"type": "lifespan.startup"})
    await out.get()
    user = await storage.create_user("bench")
    token = auth.new_token()
    await storage.add_token(user.id, auth.hash_token(token))
    store = await storage.create_store(user.id, "bench", None, auth.new_signing_key())
    keys = [f"k{i:04d}" for i in range(100)]
    for k in keys:
        await storage.put_record(store.id, k, Body(b"r" * 1024), "application/octet-stream", None)
    if os.environ.get("STUB"):
        from bench.cpu_get import _Replay
        lifespan["state"]["openkvs"].storage = _Replay(storage)
    state = dict(lifespan["state"])
    if BARE:
        from bench.bare_app import app as bare
        target, scopes = bare, [_scope(f"/v2/key-value-stores/x/records/{k}", None, {}) for k in keys]
    else:
        target, scopes = app, [_scope(f"/v2/key-value-stores/{store.id}/records/{k}", token, state) for k in keys]
    if os.environ.get("PUT"):
        for scope in scopes:
            scope["method"] = "PUT"
            scope["headers"] = [*scope["headers"], (b"content-type", b"application/octet-stream"),
                                (b"content-length", b"1024")]
        target = _with_body(target)
    for i in range(300):
        await _collect(target, scopes[i % 100])
    subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True)
    for i in range(N):
        await _collect(target, scopes[i % 100])
    subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], capture_output=True)
    os._exit(0)
uvloop.run(main())
