"""Field statistics kept push by push (storage/datasets.py ``add_field_stats``): the statistics of two runs of items
added together are those of all the items at once, whatever is in them and however they are split."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from openkvs.datasets.stats import field_statistics
from openkvs.storage.datasets import add_field_stats
from tests.conftest import examples

SCHEMA = {"actorSpecification": 1, "fields": {"properties": {"a": {}, "b": {}, "c": {}}}}
value = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5) | st.lists(
    st.none(), max_size=3
) | st.dictionaries(st.text(max_size=2), st.none(), max_size=3)
item = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), value)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(item, max_size=20), st.lists(st.integers(min_value=0, max_value=20), max_size=4))
def test_pushes_add_up_to_all_items(items: list[dict[str, Any]], cuts: list[int]) -> None:
    bounds = [0, *sorted(min(c, len(items)) for c in cuts), len(items)]
    kept: dict[str, Any] | None = None
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        part = field_statistics(SCHEMA, items[lo:hi])
        assert part is not None
        kept = add_field_stats(kept, part)
    assert kept == field_statistics(SCHEMA, items)
