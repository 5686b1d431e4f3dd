"""PostgreSQL's plan of the look-ups by ID (tables.LOOKUP, LOOKUP_MANY): the held Store's version (two xid -> text
casts) is computed once a row, in a node of its own, and the 21 store columns' CASEs read its result;
the held record's version, and its 11 columns, likewise.
Pulled up into the columns instead, the version was computed 21 times a look-up: ~20 us of the backend's CPU, a
third of the statement (bench/pg_micro.py lookupcpu). A CPU time is no thing to assert; where the version is
computed is."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import two_pg_nodes

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


def _own_node_of_the_version(plan: dict[str, Any], xmin: str) -> list[str]:
    """The nodes (types) that compute the version (of the rows whose ``xmin`` it casts) and nothing else: their output is it and its comparison, and
    they read no table (EXPLAIN shows a column that a node takes from its child as the child's expression, so
    the join nodes above show the version too)."""
    return [
        node["Node Type"]
        for node in _nodes(plan)
        if "Relation Name" not in node and node.get("Output")
        and all(xmin in out for out in node["Output"])
    ]


@pytest.mark.parametrize("shape", ["one", "one with a record", "many with a record"])
async def test_the_version_is_computed_once_in_a_node_of_its_own(shape: str) -> None:
    from openkvs.storage.postgres.tables import LOOKUP, LOOKUP_MANY, text_array

    levels = text_array(["ANYONE_WITH_ID_CAN_READ"])
    sql, args = {
        "one": (LOOKUP[(False, False)], ("u", levels, "s", "kvs", "5:5")),
        "one with a record": (LOOKUP[(False, True)], ("u", levels, "s", "kvs", "k", "5:5", "7")),
        "many with a record": (LOOKUP_MANY[True], (levels, "kvs", "{u,v}", "{s,t}", "{5:5,NULL}", "{k,l}", "{7,NULL}")),
    }[shape]
    async with two_pg_nodes() as (a, _, _):
        async with a._p().acquire() as conn:
            plan = json.loads(await conn.fetchval("EXPLAIN (VERBOSE, FORMAT JSON) " + sql, *args))[0]["Plan"]
    # pulled up (OFFSET 0 left out), no node computes only the version: the columns' CASEs each compute it
    assert len(_own_node_of_the_version(plan, "(s.xmin)::text")) == 1, json.dumps(plan, indent=1)
    if shape != "one":  # the record's version likewise (tables.RECORD_VERSION)
        assert len(_own_node_of_the_version(plan, "(r.xmin)::text")) == 1, json.dumps(plan, indent=1)
