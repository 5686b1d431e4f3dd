"""Every route's ``Allow`` header, its 405 and its CORS preflight agree with the methods it really serves: a method
in ``Allow`` is never answered 405, and every other one is, with Apify's message (API.md section 2: ``OPTIONS`` then
the path's methods, no HEAD) and ``Allow`` listing HEAD wherever GET is served (RFC 9110 10.2.1).

The paths name resources that do not exist, so a served method answers 401/404 and changes nothing."""

from __future__ import annotations

import re

import pytest

from openkvs.app import ROUTES
from tests.conftest import Server

from . import assert_error

PROBED = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
MESSAGE = "This API end-point can only be accessed using the following HTTP methods: "


def concrete(path: str) -> str:
    """The route's pattern with a value for each parameter: 17 characters for IDs, a plain key or name otherwise."""
    return re.sub(r"{(\w+)(:\w+)?}", lambda m: "A" * 17 if m.group(1).endswith("_id") else "k1", path)


DECLARED = [(route.path, list(route.endpoint.handlers)) for route in ROUTES if hasattr(route.endpoint, "handlers")]


def test_every_route_but_the_catch_all_declares_its_methods() -> None:
    undeclared = [route.path for route in ROUTES if not hasattr(route.endpoint, "handlers")]
    assert undeclared == ["/{path:path}"]
    assert len(DECLARED) >= 25


@pytest.mark.parametrize("path,declared", DECLARED, ids=[p for p, _ in DECLARED])
def test_allow_lists_exactly_the_methods_served(sqlite_server: Server, path: str, declared: list[str]) -> None:
    url = concrete(path)
    allow = ["OPTIONS", *declared[: declared.index("GET") + 1], "HEAD", *declared[declared.index("GET") + 1:]] \
        if "GET" in declared else ["OPTIONS", *declared]
    with sqlite_server.client() as c:
        preflight = c.options(url, headers={"Origin": "https://x.example", "Access-Control-Request-Method": "PUT"})
        assert preflight.status_code == 204, preflight.text
        assert preflight.headers["allow"] == ",".join(allow)
        assert preflight.headers["access-control-allow-methods"] == ",".join(allow)
        for method in PROBED:
            r = c.request(method, url)
            if method in allow:
                assert r.status_code != 405, (method, url, r.text)
            else:
                if method == "HEAD":  # no body
                    assert r.status_code == 405 and r.content == b"", (url, r.status_code)
                else:
                    assert_error(r, 405, "method-not-allowed", MESSAGE + ",".join(["OPTIONS", *declared]))
                assert r.headers["allow"] == ",".join(allow), (method, url)


def test_dataset_items_allow_head(sqlite_server: Server) -> None:
    """The contract's own list for the items path (API-datasets.md 4: GET, HEAD, POST)."""
    with sqlite_server.client() as c:
        dataset = c.post("/v2/datasets", params={"name": "allow-items"}).raise_for_status().json()["data"]
        url = f"/v2/datasets/{dataset['id']}/items"
        assert c.head(url).status_code == 200
        r = c.delete(url)
    assert_error(r, 405, "method-not-allowed", MESSAGE + "OPTIONS,GET,POST")
    assert r.headers["allow"] == "OPTIONS,GET,HEAD,POST"
