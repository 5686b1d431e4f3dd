"""tables.text_array, the PostgreSQL array literal a burst of look-ups sends its IDs, keys and held versions in:
whatever the strings hold (quotes, backslashes, commas, braces, the word NULL, spaces) and wherever None is,
PostgreSQL reads back the very list. Lists of plain strings take a one-join way, others are built element by
element: both are checked, and lists that mix them."""

from __future__ import annotations

import random

import pytest

from .conftest import two_pg_nodes

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

PIECES = ['"', "\\", ",", "{", "}", " ", "NULL", "null", "a", "Zz9", "é☃", "'", "\t", "\x01", "\\\\", '\\"', ""]


def _lists() -> list[list[str | None]]:
    fixed: list[list[str | None]] = [
        [], [""], [None], [None, None], ["NULL"], ["a", None, "b"], ['a"b', None], ["x\\", "y"], ["{}", ","],
        ["ab", "cd", "ef"], [" lead", "trail "], ["é☃", None, "NULL"], ["\x01"],
    ]
    draw = random.Random(19)
    for _ in range(300):
        fixed.append([
            None if draw.random() < 0.15 else "".join(draw.choice(PIECES) for _ in range(draw.randrange(4)))
            for _ in range(draw.randrange(1, 7))
        ])
    return fixed


async def test_postgres_reads_back_the_list() -> None:
    from openkvs.storage.postgres.tables import text_array

    lists = _lists()
    assert sum(all(v is None or not set(v) & {'"', "\\"} for v in values) for values in lists) > 50  # the fast way
    async with two_pg_nodes() as (a, _, _):
        async with a._p().acquire() as conn:
            for values in lists:
                for sent in (values, tuple(values)):
                    assert await conn.fetchval("SELECT $1::text::text[]", text_array(sent)) == values, values
