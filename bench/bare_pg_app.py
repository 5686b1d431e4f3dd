"""PostgreSQL's floor for bench/records.py: the bare Starlette endpoint plus the least any server that keeps
records in PostgreSQL must do per request, one asyncpg statement on a kept connection.

GET reads the 1 KiB value of the key (``SELECT value FROM <table> WHERE key = $1``); PUT reads the body and
upserts it (its own transaction, committed before the 201, as openkvs's PUT is). Connections are kept in a plain
list (no pool bookkeeping, no reset on release, statements prepared once by asyncpg's cache), as many as openkvs
opens by default (10): nothing here checks access, names a store, counts, logs or limits. openkvs / this app is
the share of PostgreSQL's per-request cost that openkvs could still win back; this app / bare is what asyncpg and
PostgreSQL leave of the bare endpoint's speed.

Served like bench/bare_app.py (uvicorn, 1 worker, uvloop/httptools, no access log). Environment:
BENCH_FLOOR_DSN (a database the benchmark may write), BENCH_FLOOR_TABLE (created and filled with 1,000 keys
k00000000... if missing).
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DSN = os.environ.get("BENCH_FLOOR_DSN", "postgresql://postgres@127.0.0.1:5432/test")
TABLE = os.environ.get("BENCH_FLOOR_TABLE", "bench_floor")
CONNECTIONS = 10
NKEYS = 1000
PAYLOAD = b"x" * 1024

_idle: list[asyncpg.Connection] = []
_waiting: deque[asyncio.Future[asyncpg.Connection]] = deque()


async def _take() -> asyncpg.Connection:
    if _idle:
        return _idle.pop()
    fut: asyncio.Future[asyncpg.Connection] = asyncio.get_running_loop().create_future()
    _waiting.append(fut)
    return await fut


def _give(conn: asyncpg.Connection) -> None:
    while _waiting:
        fut = _waiting.popleft()
        if not fut.done():
            fut.set_result(conn)
            return
    _idle.append(conn)


async def record(request: Request) -> Response:
    key = request.path_params["key"]
    if request.method == "PUT":
        body = await request.body()
        conn = await _take()
        try:
            await conn.execute(
                f"INSERT INTO {TABLE} (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2", key, body
            )
        finally:
            _give(conn)
        return Response(b"{}", status_code=201, media_type="application/json")
    conn = await _take()
    try:
        value = await conn.fetchval(f"SELECT value FROM {TABLE} WHERE key = $1", key)
    finally:
        _give(conn)
    if value is None:
        return Response(b"", status_code=404)
    return Response(value, media_type="application/octet-stream")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    setup = await asyncpg.connect(DSN)
    try:
        await setup.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (key text PRIMARY KEY, value bytea NOT NULL)")
        await setup.executemany(
            f"INSERT INTO {TABLE} (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            [(f"k{i:08d}", PAYLOAD) for i in range(NKEYS)],
        )
    finally:
        await setup.close()
    _idle.extend([await asyncpg.connect(DSN) for _ in range(CONNECTIONS)])
    try:
        yield
    finally:
        for conn in _idle:
            await conn.close()


app = Starlette(
    routes=[Route("/v2/key-value-stores/{store}/records/{key}", record, methods=["GET", "PUT"])], lifespan=lifespan
)
