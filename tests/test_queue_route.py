"""The app's router tries the routes of a queue's requests (``/v2/request-queues/{queue_id}/...``) before Starlette's
loop over the whole table (app.ApiRouter): it must pick the same route with the same parameters as Starlette's
Router over the same table, for every path under that prefix and next to it."""

from __future__ import annotations

import pytest
from starlette.routing import Router

from openkvs.app import ApiRouter

from .test_record_route import _route, _table

pytestmark = pytest.mark.anyio

PATHS = [
    "/v2/request-queues/q1/requests",
    "/v2/request-queues/q1/requests/",
    "/v2/request-queues/q1/requests/batch",
    "/v2/request-queues/q1/requests/unlock",
    "/v2/request-queues/q1/requests/abc",
    "/v2/request-queues/q1/requests/abc/lock",
    "/v2/request-queues/q1/requests/abc/lock/x",
    "/v2/request-queues/q1/requests/a\nb",
    "/v2/request-queues/q1/head",
    "/v2/request-queues/q1/head/lock",
    "/v2/request-queues/q1/head/",
    "/v2/request-queues/q1/other",
    "/v2/request-queues/q1/",
    "/v2/request-queues/q1",
    "/v2/request-queues/~name/head",
    "/v2/request-queues//head",
    "/v2/request-queues/",
    "/v2/request-queues",
    "/v2/request-queuesX/q1/head",
    "/v2/request-queues/q1/records/k",
]


@pytest.mark.parametrize("root_path", ["", "/api"])
@pytest.mark.parametrize("path", PATHS)
async def test_the_same_route_and_parameters_as_starlette(path: str, root_path: str) -> None:
    ours, theirs = ApiRouter(_table()), Router(routes=_table())
    assert await _route(ours, path, root_path) == await _route(theirs, path, root_path)
