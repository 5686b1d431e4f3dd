"""What a PATH given to ``openkvs import`` holds: a storage folder (``./storage``, with any of
``key_value_stores/``, ``datasets/`` and ``request_queues/``), one of those folders, or one store's, dataset's or
queue's folder. Every store, dataset and queue found is read and checked here, before anything is sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from openkvs.client.http import ClientError
from openkvs.client.localdataset import LocalDataset, is_dataset, read_dataset
from openkvs.client.localfiles import KINDS, check_name, entries, kind_of, refuse_links
from openkvs.client.localqueue import LocalQueue, is_queue, read_queue
from openkvs.client.localstore import LocalStore, find_stores, read_store


@dataclass
class Found:
    stores: list[LocalStore] = field(default_factory=list)
    datasets: list[LocalDataset] = field(default_factory=list)
    queues: list[LocalQueue] = field(default_factory=list)

    def count(self) -> int:
        return len(self.stores) + len(self.datasets) + len(self.queues)


def _folders(kind_folder: Path) -> list[Path]:
    """The stores', datasets' or queues' folders in one kind's folder (an interrupted export's ``NAME~partial``,
    incomplete, is left out)."""
    return [p for p in entries(kind_folder) if p.is_dir() and "~" not in p.name]


def _add(found: Found, kind: str, folder: Path) -> None:
    if kind == "datasets":
        found.datasets.append(read_dataset(folder))
    elif kind == "request_queues":
        found.queues.append(read_queue(folder))
    else:
        found.stores.append(read_store(folder))


def find(path: Path, store: str | None = None) -> Found:
    """Every store, dataset and queue PATH holds; unless STORE names where the one it holds goes, the name each
    goes into is checked too."""
    found = Found()
    if not path.is_dir():
        raise ClientError(f"{path} is not a folder")
    if any((path / kind).is_dir() for kind in KINDS):  # a storage folder
        refuse_links(path, [path / kind for kind in KINDS])  # (what else the folder holds is not read)
        for kind in KINDS:
            if (path / kind).is_dir():
                for folder in _folders(path / kind):
                    _add(found, kind, folder)
    elif (named := kind_of(path)) is not None:
        for folder in _folders(path) if path.name == named else [path]:
            _add(found, named, folder)
    elif is_dataset(path):
        found.datasets.append(read_dataset(path))
    elif is_queue(path):
        found.queues.append(read_queue(path))
    else:  # a store's folder, or a folder of stores' folders (what import took before it read other kinds)
        found.stores = find_stores(path)
    if not found.count():
        raise ClientError(f"no key-value stores, datasets or request queues in {path} (expected storage/"
                          f"{{{','.join(KINDS)}}}/<name>/)")
    if store is None:
        for what, some in (("store", found.stores), ("dataset", found.datasets), ("queue", found.queues)):
            for local in some:
                check_name(local.folder, local.name, what)
    return found
