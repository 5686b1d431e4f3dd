"""A dataset's or request queue's ``title`` (PUT, API-datasets.md 4.3, API-request-queues.md) that neither backend
can keep, a lone surrogate (no UTF-8) or a NUL (PostgreSQL's text has none), is a 400 that changes nothing: the
lone surrogate was a 500 from the database layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from . import assert_error, unique

if TYPE_CHECKING:
    from tests.conftest import Server


@pytest.mark.parametrize("path", ["/v2/datasets", "/v2/request-queues"])
def test_a_title_no_backend_can_keep_is_a_400(shared_server: Server, path: str) -> None:
    with shared_server.client() as c:
        rid = c.post(path, params={"name": unique()}).json()["data"]["id"]
        assert c.put(f"{path}/{rid}", json={"title": "Kept é 😀"}).status_code == 200
        for raw in (b'{"title":"\\ud800"}', b'{"title":"a\\udfffb"}', b'{"title":"a\\u0000"}'):
            r = c.put(f"{path}/{rid}", content=raw, headers={"Content-Type": "application/json"})
            assert_error(r, 400, "invalid-input")
        assert c.get(f"{path}/{rid}").json()["data"]["title"] == "Kept é 😀"
