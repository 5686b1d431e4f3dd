"""A dataset's schema under attack (API-datasets.md 9.1): how large it may be, who may change it, and what its size
costs the other clients. The dataset's object carries it: its GET (any reader's, as often as it likes) encoded
megabytes with json.dumps, one call on the event loop that nothing interrupts (0.3-0.5 s of every other request's
time in the attack run, BENCHMARKS.md Issue 13). It comes back as given, and never through the event loop's stdlib
encoder."""

from __future__ import annotations

from typing import Any

import pytest

from openkvs.api import common
from openkvs.storage.base import Storage
from tests.inprocess import app_client
from tests.storage.conftest import storage  # noqa: F401 - the fixture, over both backends

pytestmark = pytest.mark.anyio

PROPERTIES = 5_000


async def _token(backend: Storage) -> dict[str, str]:
    from openkvs import auth

    user = await backend.create_user("alice")
    token = auth.new_token()
    await backend.add_token(user.id, auth.hash_token(token))
    return {"Authorization": f"Bearer {token}"}


def _schema(**extra: Any) -> dict[str, Any]:
    props = {f"p{i}": {"type": "number", "maximum": 0.5, "description": "é" * 20} for i in range(PROPERTIES)}
    return {"actorSpecification": 1, "fields": {"type": "object", "properties": {**props, **extra}}}


@pytest.mark.parametrize("extra", [{}, {"big": {"type": "integer", "maximum": 2**70}}], ids=["plain", "big-int"])
async def test_the_schema_comes_back_as_given_without_the_stdlib_encoder(
    storage: Storage, extra: dict[str, Any], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    auth = await _token(storage)
    schema = _schema(**extra)
    async with app_client(storage) as (client, _):
        r = await client.post("/v2/datasets?name=wide", json={"schema": schema}, headers=auth)
        assert r.status_code == 201, r.text
        assert r.json()["data"]["schema"] == schema
        did = r.json()["data"]["id"]
        encoded: list[int] = []
        to_json = common.to_json

        def counted(data: Any) -> bytes:
            body = to_json(data)
            encoded.append(len(body))
            return body

        monkeypatch.setattr(common, "to_json", counted)
        for method in ("GET", "PUT"):
            r = await client.request(method, f"/v2/datasets/{did}", headers=auth,
                                     json={"title": "t"} if method == "PUT" else None)
            assert r.status_code == 200, r.text
            assert r.json()["data"]["schema"] == schema
        if not extra:  # (an integer past 64 bits is the exception: orjson refuses it, json encodes it as before)
            assert not [n for n in encoded if n > 100_000], encoded


@pytest.mark.parametrize("given", [None, {"collections": {}}, {"actorSpecification": 1, "fields": {"type": "object"}}])
async def test_a_put_leaves_the_schema_as_created(storage: Storage, given: Any) -> None:  # noqa: F811
    """API-datasets.md 9.1 and 4.3: the schema is set only at creation; a PUT's other keys are ignored. A PUT took it
    (null, or a key-value store's schema checked by that kind's rules): a writer could turn the validation off."""
    auth = await _token(storage)
    schema = {"actorSpecification": 1, "fields": {"type": "object", "required": ["url"]}}
    async with app_client(storage) as (client, _):
        did = (await client.post("/v2/datasets", json={"schema": schema}, headers=auth)).json()["data"]["id"]
        r = await client.put(f"/v2/datasets/{did}", json={"title": "t", "schema": given}, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["data"]["schema"] == schema and r.json()["data"]["title"] == "t"
        assert (await client.get(f"/v2/datasets/{did}", headers=auth)).json()["data"]["schema"] == schema
        pushed = await client.post(f"/v2/datasets/{did}/items", json=[{"no": "url"}], headers=auth)
        assert pushed.status_code == 400 and pushed.json()["error"]["type"] == "schema-validation-error", pushed.text


@pytest.mark.parametrize("ints", [False, True], ids=["plain", "big-int"])
async def test_a_schema_over_4_mib_is_a_400_and_no_dataset(storage: Storage, ints: bool) -> None:  # noqa: F811
    """Checking a schema costs ~1.4 us a byte and every look-up parses it again: bounded (a decision), not only by
    the body's 9 MiB. A long description is cheap to check, so the old code took it."""
    from openkvs.dataset_schema import MAX_SCHEMA_BYTES

    auth = await _token(storage)
    schema: dict[str, Any] = {"actorSpecification": 1, "fields": {"type": "object"}, "description": "d" * MAX_SCHEMA_BYTES}
    if ints:  # (what orjson refuses is measured too)
        schema["fields"]["maximum"] = 2**70
    async with app_client(storage) as (client, _):
        r = await client.post("/v2/datasets?name=big", json={"schema": schema}, headers=auth)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "dataset-schema-invalid"
        assert f"more than {MAX_SCHEMA_BYTES:,}" in r.json()["error"]["message"]
        assert (await client.get("/v2/datasets", headers=auth)).json()["data"]["total"] == 0
        schema["description"] = "d" * (MAX_SCHEMA_BYTES - 200)  # at the limit: taken
        r = await client.post("/v2/datasets?name=big", json={"schema": schema}, headers=auth)
        assert r.status_code == 201 and r.json()["data"]["schema"] == schema, r.text
