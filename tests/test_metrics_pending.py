"""The request metrics counted in plain integers per request (metrics._Pending) and moved into prometheus_client's
objects in bulk come out as the library's own ``observe`` and ``inc`` one request at a time would make them."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from openkvs import metrics
from tests.conftest import examples

# Durations on and around every bucket bound (a request of exactly a bound's length is counted in that bucket).
BOUNDS_NS = [round(b * 1e9) for b in metrics.LATENCY_BUCKETS]
DURATIONS = st.one_of(
    st.integers(0, 400 * 10**9),
    st.sampled_from(BOUNDS_NS).flatmap(lambda b: st.sampled_from([b - 1, b, b + 1])),
)
REQUEST = st.tuples(st.sampled_from(["/a/{x}", "/b"]), st.sampled_from(["GET", "PUT"]),
                    st.sampled_from([200, 404, 429]), DURATIONS, st.integers(0, 10**7))


def _sample(metric: object, name: str, labels: dict[str, str]) -> float:
    for family in metric.collect():  # type: ignore[attr-defined]
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


@settings(max_examples=examples(100), deadline=None)
@given(requests=st.lists(REQUEST, max_size=30))
def test_bulk_counts_are_the_librarys_one_by_one(requests: list[tuple[str, str, int, int, int]]) -> None:
    # the reference: the library's objects fed one request at a time, in a registry of their own
    registry = CollectorRegistry()
    counts = Counter("r", "", ["route", "method", "status"], registry=registry)
    sizes = Counter("b", "", ["route"], registry=registry)
    limited = Counter("l", "", ["route"], registry=registry)
    latency = Histogram("d", "", ["route", "method"], buckets=metrics.LATENCY_BUCKETS, registry=registry)
    before = {name: _snapshot(metric) for name, metric in _ours().items()}
    pending = metrics._Pending()
    loop = asyncio.new_event_loop()
    pending.timer = loop.call_later(3600, lambda: None)  # as if a flush were due: observe sets no timer
    for route, method, status, ns, sent in requests:
        pending.observe(route, method, status, ns, sent)
        counts.labels(route, method, str(status)).inc()
        if sent:
            sizes.labels(route).inc(sent)
        if status == 429:
            limited.labels(route).inc()
        latency.labels(route, method).observe(ns / 1e9)
    pending.flush()
    loop.close()
    reference = {"requests": _snapshot(counts), "bytes": _snapshot(sizes), "limited": _snapshot(limited),
                 "latency": _snapshot(latency)}
    for name, metric in _ours().items():
        added = {k: v - before[name].get(k, 0.0) for k, v in _snapshot(metric).items()}
        got = {k: v for k, v in added.items() if v}
        expected = {k: v for k, v in reference[name].items() if v}
        assert got.keys() == expected.keys(), name
        for k, v in expected.items():
            assert abs(got[k] - v) <= 1e-9 * max(1.0, abs(v)), (name, k, got[k], v)


def _ours() -> dict[str, object]:
    return {"requests": metrics.REQUESTS, "bytes": metrics.RESPONSE_BYTES, "limited": metrics.RATE_LIMITED,
            "latency": metrics.LATENCY}


def _snapshot(metric: object) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Sample values by the sample's suffix (_total, _bucket, _count, _sum) and labels."""
    return {(s.name[len(family.name):], frozenset(s.labels.items())): float(s.value)
            for family in metric.collect() for s in family.samples  # type: ignore[attr-defined]
            if not s.name.endswith("_created")}
