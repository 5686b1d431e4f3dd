"""``GET /health/live`` and ``GET /health/ready``: for load balancers, orchestrators and monitoring.

No token, no rate limit, nothing about stores or users in the answer. Live: the process answers. Ready: storage
answers one query and its schema is migrated to at least the version this openkvs knows (a newer one, migrated by
a newer node during a rolling upgrade, is still ready: old nodes keep serving until they are replaced), Redis
answers a PING when ``--redis-url`` is set, and the bucket a HEAD when ``--blob-store`` is set (records past
``--blob-inline-max`` get 503 without it); else 503 with the reason. The
answer is reused for ``READY_CACHE_SECONDS``, so that any number of pollers cost at most one check a second.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from openkvs.api.common import state, to_json
from openkvs.storage.base import StorageError

READY_CACHE_SECONDS = 1.0
CHECK_TIMEOUT = 2.0

_HEADERS = {"Cache-Control": "no-store"}


def _answer(status: int, body: dict[str, Any]) -> Response:
    return Response(to_json(body), status, _HEADERS, media_type="application/json; charset=utf-8")


async def live(request: Request) -> Response:
    return _answer(200, {"status": "ok"})


class _Ready:
    """The last readiness answer and when it expires; one check at a time however many pollers ask."""

    def __init__(self) -> None:
        self.expires = 0.0
        self.answer: tuple[int, dict[str, Any]] = (503, {})
        self.lock = asyncio.Lock()
        self.redis: Any = None  # a client of its own: the rate limiter's lets requests through when Redis is down


async def ready(request: Request) -> Response:
    st = state(request)
    cache: _Ready | None = getattr(st, "ready_cache", None)
    if cache is None:
        cache = st.ready_cache = _Ready()  # type: ignore[attr-defined]
    if time.monotonic() >= cache.expires:
        async with cache.lock:
            if time.monotonic() >= cache.expires:
                cache.answer = await _check(st, cache)
                cache.expires = time.monotonic() + READY_CACHE_SECONDS
    status, body = cache.answer
    return _answer(status, body)


async def _check(st: Any, cache: _Ready) -> tuple[int, dict[str, Any]]:
    checks: dict[str, str] = {}
    problems: list[str] = []
    try:
        found, known = await asyncio.wait_for(st.storage.tables_version(), CHECK_TIMEOUT)
        if found == known:
            checks["storage"] = "ok"
        elif found > known:  # migrated by a newer node mid rolling upgrade: this one still works until replaced
            checks["storage"] = f"ok (schema version {found} is newer than this openkvs's {known}: upgrade this node)"
        else:
            checks["storage"] = f"schema version {found}, this openkvs needs {known}"
            problems.append(f"storage schema not migrated (version {found}, needs {known}): run openkvs migrate")
    except (TimeoutError, StorageError, OSError) as exc:
        checks["storage"] = "unreachable"
        problems.append(f"storage unreachable: {type(exc).__name__}")
    if st.settings.redis_url:
        try:
            if cache.redis is None:
                import redis.asyncio as aioredis

                cache.redis = aioredis.from_url(
                    st.settings.redis_url, socket_timeout=CHECK_TIMEOUT, socket_connect_timeout=CHECK_TIMEOUT
                )
            await asyncio.wait_for(cache.redis.ping(), CHECK_TIMEOUT)
            checks["redis"] = "ok"
        except Exception as exc:  # any failure of the client is "not reachable"; the reason's type is enough
            checks["redis"] = "unreachable"
            problems.append(f"redis unreachable: {type(exc).__name__}")
    if st.storage.blob_store is not None:
        from openkvs.storage.bucket import BucketRefused

        try:
            await asyncio.wait_for(st.storage.blob_store.check(), CHECK_TIMEOUT)
            checks["bucket"] = "ok"
        except BucketRefused as exc:  # its reason names no bucket (this answer is public)
            checks["bucket"] = "refused"
            problems.append(f"bucket {exc.why}")
        except (TimeoutError, StorageError) as exc:
            checks["bucket"] = "unreachable"
            problems.append(f"bucket unreachable: {type(exc).__name__}")
    if problems:
        return 503, {"status": "unavailable", "reason": "; ".join(problems), "checks": checks}
    return 200, {"status": "ok", "checks": checks}


async def close(st: Any) -> None:
    """At shutdown (the app's lifespan): the readiness check's Redis connection, if it made one."""
    cache: _Ready | None = getattr(st, "ready_cache", None)
    if cache is not None and cache.redis is not None:
        client, cache.redis = cache.redis, None
        await client.aclose()
