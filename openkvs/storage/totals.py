"""The totals each store keeps of its records, besides its record count, for sizing a ZIP download: the sum of
its keys' UTF-8 lengths, of its decoded sizes, how many need ZIP64 sizes and how many are large. Both backends keep
them in the transaction of every record write and delete (their tables.py: STORE_TOTALS), so a snapshot of a whole
store reads them from its store row instead of a scan of its records (the scan was most of the time to the first
byte of a ZIP of many records), and a store without large records sizes its batches without a scan either. Here:
the facts they are counted by, and how ``openkvs check`` tells of wrong ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

# Facts of the tables: changing one needs a migration that counts again.
SMALL_RECORD_MAX = 2048  # stored bytes: a record above it is large (stores.large_count)
ZIP64_SIZE = 0xFFFFFFFF  # from this decoded size on, an entry needs ZIP64 sizes (SnapshotTotals.big_count)

Totals = Sequence[int]  # a store's record_count, key_bytes, decoded_bytes, zip64_count, large_count


class Kept(NamedTuple):
    """A store's totals as kept, and whether they are kept up to its generation (stores.totals_generation): a
    write by an older openkvs, which keeps none of them but the record count, leaves them behind."""

    totals: Totals
    current: bool


def wrong(found: Kept, counted: Totals) -> str:
    """What is wrong in a store's kept totals, for ``openkvs check``."""
    kept = found.totals
    said = []
    if kept[0] != counted[0]:
        said.append(f"its record count says {kept[0]}, it holds {counted[0]} records")
    if not found.current:
        said.append("its ZIP totals were left behind by a write of an older openkvs (its downloads count them)")
    elif list(kept[1:]) != list(counted[1:]):
        said.append(
            f"its ZIP totals (key bytes, decoded bytes, ZIP64 entries, large records) say {list(kept[1:])}, "
            f"its records give {list(counted[1:])}"
        )
    return "; ".join(said) + " (openkvs check --fix)"


def fixed(found: Kept, counted: Totals) -> str:
    """What ``openkvs check --fix`` changed in a store's kept totals."""
    kept = found.totals
    done = []
    if kept[0] != counted[0]:
        done.append(f"record count {kept[0]} -> {counted[0]}")
    if list(kept[1:]) != list(counted[1:]) or not found.current:
        done.append(f"ZIP totals {list(kept[1:])} -> {list(counted[1:])}")
    return "; ".join(done)
