"""openkvs/heap.py: the server's process keeps freed memory for the next request instead of faulting new pages in
for every large body (glibc only; the suite runs on glibc)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Three blocks of 600 KB made and freed, 60 times over (as a push's body, items and rows are): by default glibc
# gives the top of its heap back after each round (its bound, twice the largest block it mapped, is 1.2 MB here),
# and every round's blocks are new pages again, ~440 page faults a round.
ROUNDS = """
import json, os, resource, sys
sys.path.insert(0, os.getcwd())
from openkvs import heap
tuned = heap.tune() if sys.argv[1] == "tune" else None
def round_():
    blocks = [bytearray(600_000) for _ in range(3)]
    del blocks
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(60):
    round_()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"tuned": tuned, "faults": faults, "env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}))
"""


def run(how: str, env: dict[str, str]) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", ROUNDS, how], env={**clean, **env}, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_tuned_the_rounds_fault_no_new_pages_in_and_workers_get_it_through_the_environment() -> None:
    got = run("tune", {})
    assert got["tuned"] == ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"]
    assert got["faults"] < 60  # (a round's 1.8 MB is ~440 pages: none of them new again)
    assert got["env"] == {"MALLOC_TRIM_THRESHOLD_": "16777216", "MALLOC_MMAP_THRESHOLD_": "4194304"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_threshold_set_in_the_environment_stands_and_the_other_is_still_set() -> None:
    got = run("tune", {"MALLOC_TRIM_THRESHOLD_": "1000000"})
    assert got["tuned"] == ["MALLOC_MMAP_THRESHOLD_"]
    assert got["env"] == {"MALLOC_TRIM_THRESHOLD_": "1000000", "MALLOC_MMAP_THRESHOLD_": "4194304"}
    both = run("tune", {"MALLOC_TRIM_THRESHOLD_": "1000000", "MALLOC_MMAP_THRESHOLD_": "200000"})
    assert both["tuned"] == []
    assert both["env"] == {"MALLOC_TRIM_THRESHOLD_": "1000000", "MALLOC_MMAP_THRESHOLD_": "200000"}
