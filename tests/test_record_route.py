"""The app's router tries the record route first with string operations instead of Starlette's loop and regexes
(app.ApiRouter). It must pick the same route with the same scope fields as Starlette's Router over the same
table, whatever the path: newlines, empty or slashed segments, "/records/" inside a key, a root path."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.routing import Route, Router

from openkvs.app import ROUTES, ApiRouter, _segment_then_rest

pytestmark = pytest.mark.anyio

PATHS = [
    "/v2/key-value-stores/abc/records/k",
    "/v2/key-value-stores/abc/records/",
    "/v2/key-value-stores//records/k",
    "/v2/key-value-stores/abc/records/k\n",
    "/v2/key-value-stores/a b\n/records/k%0A\n",
    "/v2/key-value-stores/abc/records/a/records/b",
    "/v2/key-value-stores/abc/records//",
    "/v2/key-value-stores/abc/recordsx/k",
    "/v2/key-value-stores/abc/def/records/k",
    "/v2/key-value-stores/abc/records",
    "/v2/key-value-stores/abc",
    "/v2/key-value-stores/abc/keys",
    "/v2/key-value-stores",
    "/v2/key-value-storesX/abc/records/k",
    "/v2/openapi.json",
    "/",
]


class Recorder:
    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["seen"] = (self.name, scope["route"].path, scope["endpoint"].name, dict(scope["path_params"]))


def _table() -> list[Route]:
    return [Route(r.path, Recorder(r.path)) for r in ROUTES]


async def _route(router: Router, path: str, root_path: str = "") -> Any:
    scope = {"type": "http", "method": "GET", "path": root_path + path, "root_path": root_path, "headers": []}
    await router(scope, None, None)
    return scope["seen"]


@pytest.mark.parametrize("root_path", ["", "/api"])
@pytest.mark.parametrize("path", PATHS)
async def test_the_same_route_and_parameters_as_starlette(path: str, root_path: str) -> None:
    ours, theirs = ApiRouter(_table()), Router(routes=_table())
    assert await _route(ours, path, root_path) == await _route(theirs, path, root_path)


def test_the_string_match_is_the_regex_match() -> None:
    route = ROUTES[0]
    split = _segment_then_rest(route)
    assert split is not None  # the record route has the shape it handles
    for path in PATHS:
        match = route.path_regex.match(path)
        assert split(path) == (match.groupdict() if match else None), path
