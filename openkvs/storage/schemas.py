"""A store's schema as both backends read it: JSON text, parsed once per store and text (``parsed``).

A schema may be megabytes (a collection's jsonSchema with 100,000 properties: 4.7 MB; a dataset's up to
dataset_schema.MAX_SCHEMA_BYTES). Every look-up that misses the held Store (on PostgreSQL, any record write
changes the store row) reads the row again; parsing its schema each time cost ~150 ms of the event loop a
PUT+GET pair, stalling every other request of the server. The text is still read, so a schema changed on any
node is seen by the next look-up: only the parse is skipped when the text is the one parsed last time for that
store (string equality: a length check, then a memcmp).
"""

from __future__ import annotations

import json
from typing import Any

LIMIT = 1024  # stores kept (like StoreMemo's); a flood of distinct stores starts over
# and at most this much schema text: parsed, a schema takes several times its text's memory, and a user may make
# many stores with schemas near the 4 MiB cap (StoreMemo, which holds Stores with their schemas, counts the same)
HELD_BYTES = 32 * 1024 * 1024

# store ID -> (the schema's text, its parsed value). The value is shared by every Store made from that text, as a
# held Store already is (StoreMemo): nothing mutates a Store's schema. Plain dict operations, safe from SQLite's
# worker threads under the GIL; a race at worst parses a text twice.
_kept: dict[str, tuple[str, Any]] = {}
_held = [0]  # the length of the texts in _kept


def parsed(store_id: str, text: str | None) -> Any:
    """The parsed ``text`` of the schema of store ``store_id`` (None for none), parsed only if it is not the text
    parsed last for that store."""
    if text is None:
        return None
    kept = _kept.get(store_id)
    if kept is not None and kept[0] == text:
        return kept[1]
    value = json.loads(text)
    if len(_kept) >= LIMIT or _held[0] + len(text) > HELD_BYTES:
        _kept.clear()
        _held[0] = 0
    if len(text) <= HELD_BYTES:
        old = _kept.pop(store_id, None)
        _held[0] += len(text) - (len(old[0]) if old is not None else 0)
        _kept[store_id] = (text, value)
    return value
