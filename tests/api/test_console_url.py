"""A key-value store's, a dataset's and a request queue's ``consoleUrl`` opens that resource in openkvs's web console
(issue 13: they pointed at the API's JSON; stores had none, though Apify's OpenAPI gives them one), as Apify's point
at its console: the console's page, with the fragment its router reads (#/KIND/ID, openkvs/console/static/js/main.js)
naming a kind the console has pages for."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import Server


@pytest.mark.parametrize("kind", ["key-value-stores", "datasets", "request-queues"])
def test_console_url_opens_the_resource_in_the_console(sqlite_server: Server, kind: str) -> None:
    with sqlite_server.client() as c:
        created = c.post(f"/v2/{kind}", params={"name": f"console-url-{kind}"})
        assert created.status_code == 201, created.text
        resource = created.json()["data"]
        got = c.get(f"/v2/{kind}/{resource['id']}").json()["data"]
        assert resource["consoleUrl"] == got["consoleUrl"] == f"{sqlite_server.url}/console/#/{kind}/{resource['id']}"
        page = c.get(got["consoleUrl"])  # what a browser fetches: the address without its fragment
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "main.js" in page.text
        # the fragment's first part is a kind the console routes to
        router = c.get(f"/console/js/kinds/{kind}.js")
        assert router.status_code == 200 and f'path: "{kind}"' in router.text


def test_a_store_in_the_list_has_its_console_url(sqlite_server: Server) -> None:
    """Apify's list of stores holds the same objects as GET of one (KeyValueStore in its OpenAPI), consoleUrl too."""
    with sqlite_server.client() as c:
        created = c.post("/v2/key-value-stores", params={"name": "console-url-listed"}).json()["data"]
        listed = c.get("/v2/key-value-stores").json()["data"]["items"]
        [item] = [s for s in listed if s["id"] == created["id"]]
        assert item["consoleUrl"] == f"{sqlite_server.url}/console/#/key-value-stores/{created['id']}"
