"""Field statistics of a dataset with a ``fields`` schema (API-datasets.md section 4.6).

For each property of ``schema.fields.properties``: ``nullCount`` (items whose field is null), ``emptyCount``
(items without the field; an empty string is not empty), ``min`` and ``max`` over the other values, measured as:
numbers as they are, strings by length in code points, arrays by length, objects by key count, booleans 1/0
(null when no item has such a value). ``FieldStats`` is incremental and can resume from a stored ``result()``, so
the storage may keep it up to date at push time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def field_properties(schema: Mapping[str, Any] | None) -> list[str] | None:
    """The property names statistics are kept for, or None when the dataset has no ``fields`` schema."""
    if not isinstance(schema, Mapping):
        return None
    fields = schema.get("fields")
    if not isinstance(fields, Mapping):
        return None
    properties = fields.get("properties")
    return [str(name) for name in properties] if isinstance(properties, Mapping) else []


def measure(value: Any) -> int | float | None:
    """The number min/max compare for one non-null value."""
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, (str, list, dict)):
        return len(value)
    return None


class FieldStats:
    def __init__(self, schema: Mapping[str, Any] | None, state: Mapping[str, Any] | None = None) -> None:
        """``state``: a previous ``result()`` of the same schema, to continue from."""
        self.properties = field_properties(schema)
        self._stats: dict[str, dict[str, Any]] = {}
        for name in self.properties or ():
            old = state.get(name) if isinstance(state, Mapping) else None
            entry = {"min": None, "max": None, "nullCount": 0, "emptyCount": 0}
            if isinstance(old, Mapping):
                entry.update({k: old[k] for k in entry if k in old})
            self._stats[name] = entry

    def add(self, item: Any) -> None:
        if self.properties is None:
            return
        get = item.get if isinstance(item, dict) else {}.get
        missing = object()
        for name, entry in self._stats.items():
            value = get(name, missing)
            if value is missing:
                entry["emptyCount"] += 1
            elif value is None:
                entry["nullCount"] += 1
            else:
                m = measure(value)
                if m is None:
                    continue
                if entry["min"] is None or m < entry["min"]:
                    entry["min"] = m
                if entry["max"] is None or m > entry["max"]:
                    entry["max"] = m

    def add_all(self, items: Iterable[Any]) -> None:
        for item in items:
            self.add(item)

    def result(self) -> dict[str, Any] | None:
        """``fieldStatistics`` as the endpoint sends it: None without a fields schema."""
        if self.properties is None:
            return None
        return {name: dict(entry) for name, entry in self._stats.items()}


def field_statistics(schema: Mapping[str, Any] | None, items: Iterable[Any]) -> dict[str, Any] | None:
    stats = FieldStats(schema)
    stats.add_all(items)
    return stats.result()
