"""The Apify SDK for Python (`apify`), unmodified, runs an Actor against openkvs as if on the platform.

The Actor script below is ordinary SDK code; only the environment points it at openkvs. The environment is the one
documented in docs/sdk.md (keep the two in step)."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import httpx

from tests.compat.actors import sdk_env  # noqa: F401  (where it lived: other modules may still import it from here)

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.compat.actors import ActorRun
    from tests.conftest import Server

ACTOR = textwrap.dedent(
    '''
    import asyncio
    import json
    import sys

    from apify import Actor


    async def main() -> None:
        async with Actor:
            actor_input = await Actor.get_input()
            await Actor.set_value("OUTPUT", {"seen": actor_input, "ok": True})
            await Actor.set_value("note.txt", "plain text", content_type="text/plain")
            await Actor.set_value("blob", bytes(range(256)), content_type="application/octet-stream")
            output = await Actor.get_value("OUTPUT")
            missing = await Actor.get_value("does-not-exist", default_value="fallback")

            kvs = await Actor.open_key_value_store(name="sdk-named-store")
            await kvs.set_value("page-1", {"n": 1})
            await kvs.set_value("page-2", {"n": 2})
            await kvs.set_value("other", "x")
            keys = [info.key async for info in kvs.iterate_keys()]
            after = [info.key async for info in kvs.iterate_keys(exclusive_start_key="other")]
            public_url = await kvs.get_public_url("page-2")
            same = await Actor.open_key_value_store(name="sdk-named-store")
            again = await same.get_value("page-1")

            report = {
                "input": actor_input,
                "output": output,
                "missing": missing,
                "note": await Actor.get_value("note.txt"),
                "blob_ok": await Actor.get_value("blob") == bytes(range(256)),
                "named_id": kvs.id,
                "keys": keys,
                "after": after,
                "public_url": public_url,
                "again": again,
            }
            print("REPORT " + json.dumps(report), flush=True)


    asyncio.run(main())
    '''
)


def test_actor_script_runs_unmodified(compat_server: Server, run_actor: Callable[..., ActorRun]) -> None:
    server = compat_server
    with server.client() as c:
        store = c.post("/v2/key-value-stores", params={"name": "sdk-default"}).json()["data"]
        r = c.put(f"/v2/key-value-stores/{store['id']}/records/INPUT", json={"startUrls": ["https://example.com"]})
        assert r.status_code == 201, r.text

    run = run_actor(ACTOR, store["id"])
    report = run.report

    assert report["input"] == {"startUrls": ["https://example.com"]}
    assert report["output"] == {"seen": report["input"], "ok": True}
    assert report["missing"] == "fallback"
    assert report["note"] == "plain text"
    assert report["blob_ok"] is True
    assert report["keys"] == ["other", "page-1", "page-2"]
    assert report["after"] == ["page-1", "page-2"]
    assert report["again"] == {"n": 1}

    # The SDK talked to the key-value store API only (no actor runs, datasets, request queues or users/me).
    requests = run.requests
    assert requests, server.log()
    assert all(r.split()[1].startswith("/v2/key-value-stores") for r in requests), requests
    print("\n".join(requests))

    # What the SDK wrote is really on the server, in the stores it was told to use.
    with server.client() as c:
        r = c.get(f"/v2/key-value-stores/{store['id']}/records/OUTPUT")
        assert r.status_code == 200 and r.json() == {"seen": report["input"], "ok": True}
        assert r.headers["content-type"].startswith("application/json")
        r = c.get(f"/v2/key-value-stores/{store['id']}/records/note.txt")
        assert r.content == b"plain text" and r.headers["content-type"].startswith("text/plain")
        named = c.get("/v2/key-value-stores/~sdk-named-store").json()["data"]
        assert named["id"] == report["named_id"]

    # The public URL works without a token, for exactly that record.
    url = report["public_url"]
    assert url.startswith(f"{server.url}/v2/key-value-stores/{report['named_id']}/records/page-2"), url
    assert "signature=" in url
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"n": 2}
    r = httpx.get(url.replace("/records/page-2", "/records/page-1"), timeout=30)
    assert r.status_code in (401, 403), r.text
