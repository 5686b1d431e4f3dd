"""Parsing a body runs no garbage collection (openkvs/jsontext.py ``collector_paused``): a 9 MB push of millions of
empty arrays held the interpreter 1.0 s in collections that walked the containers made so far, again and again,
and every other request waited; and the collector is on again afterwards."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from openkvs import jsontext
from openkvs.api.items import prepare_push_body
from openkvs.datasets import itemjson

BODY = b'{"a":[' + b"[]," * 300_000 + b"[]]}"


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generations of the collections started meanwhile, in any thread."""
    started: list[int] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(count)
    try:
        yield started
    finally:
        gc.callbacks.remove(count)


def _pushed(raw: bytes) -> int:
    """How many empty arrays the one item of a push body holds, as the push prepares it (split by _cpush.c, its
    first item parsed back for its paths)."""
    push = prepare_push_body(raw, None)
    assert len(push.items) == 1
    return push.items[0].count(b"[]")


@pytest.mark.parametrize("parse", [
    lambda raw: len(itemjson.fast_loads(raw)["a"]), lambda raw: len(jsontext.loads(raw)["a"]), _pushed,
], ids=["orjson", "json", "push"])
def test_a_parse_runs_no_collection(parse: Callable[[bytes], int], collections: list[int]) -> None:
    assert gc.isenabled()
    assert parse(BODY) == 300_001
    assert len(collections) <= 1  # (one may start when the collector is on again: a young generation, once)
    assert gc.isenabled()


def test_the_collector_is_on_again_after_parses_that_overlap() -> None:
    inside, release = threading.Event(), threading.Event()

    def slow_parse() -> None:
        with jsontext.collector_paused():
            inside.set()
            release.wait(60)

    t = threading.Thread(target=slow_parse)
    t.start()
    assert inside.wait(60)
    jsontext.loads(b"[[]]")  # begins and ends inside the other
    assert not gc.isenabled()  # (the first is still parsing)
    release.set()
    t.join(60)
    assert gc.isenabled()
