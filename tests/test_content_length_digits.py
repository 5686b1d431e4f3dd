"""A Content-Length is ASCII digits or it is not a length: ``str.isdigit`` also takes "²" (which ``int`` then refuses:
a 500) and "١٢" (which ``int`` reads as 12). The HTTP server's parser refuses such a header before the app; the app
must not rely on that (another server, a proxy speaking ASGI), so it is checked in process here."""

from __future__ import annotations

import pytest

from openkvs.storage.base import Storage

from .inprocess import app_client
from .storage.conftest import storage  # noqa: F401 - the fixture, over both backends

pytestmark = pytest.mark.anyio


async def _token(backend: Storage) -> dict[str, str]:
    from openkvs import auth

    user = await backend.create_user("alice")
    token = auth.new_token()
    await backend.add_token(user.id, auth.hash_token(token))
    return {"Authorization": f"Bearer {token}"}


# Latin-1 digits that aren't ASCII ones, and ASCII digits past int()'s 4,300
@pytest.mark.parametrize("length", ["\u00b2", "\u00b9\u00b2", "1\u00b3", "9" * 5000])
@pytest.mark.parametrize("where", ["record", "json"])
async def test_a_content_length_of_other_digits_is_a_400(storage: Storage, length: str, where: str) -> None:  # noqa: F811
    auth = await _token(storage)
    async with app_client(storage) as (client, _):
        store = (await client.post("/v2/key-value-stores?name=s", headers=auth)).json()["data"]["id"]
        if where == "record":
            url, method = f"/v2/key-value-stores/{store}/records/k", "PUT"
        else:
            url, method = f"/v2/key-value-stores/{store}", "PUT"
        headers = [(b"authorization", auth["Authorization"].encode()), (b"content-type", b"application/json"),
                   (b"content-length", length.encode("latin-1"))]
        response = await client.request(method, url, headers=headers, content=b"{}")
        assert response.status_code == 400, response.text
        assert "Content-Length" in response.json()["error"]["message"]
        if where == "record":  # nothing was written
            assert (await client.get(f"/v2/key-value-stores/{store}/records/k", headers=auth)).status_code == 404
