"""Safe entry names (openkvs/zipnames.py): which keys are renamed, how, and the case-clash finder's exactness."""

from __future__ import annotations

import random

from openkvs.zipnames import MAX_NAME, CaseClashes, safe_name


def test_rules() -> None:
    for key in ("OUTPUT", "img-1.jpg", "a" * MAX_NAME, "CONSOLE", "con-1", "x.con"):
        assert safe_name(key, clashes=False) is None, key
    for key in ("a" * (MAX_NAME + 1), "CON", "con", "nul.txt", "COM1.tar.gz", "lpt9", "a.", "..."):
        name = safe_name(key, clashes=False)
        assert name is not None and "~" in name and len(name.encode()) <= MAX_NAME, key
        assert not name.endswith(".") and name.split(".")[0].upper() not in ("CON", "NUL", "COM1", "LPT9")
    assert safe_name("output", clashes=True) is None  # the all-lower-case one keeps its name
    assert safe_name("OUTPUT", clashes=True) != safe_name("Output", clashes=True)
    long_png = safe_name("x" * 252 + ".png", clashes=False)
    assert long_png is not None and long_png.endswith(".png") and len(long_png) == MAX_NAME
    assert safe_name("a" * 256, False) != safe_name("a" * 255 + "b", False)  # same stem, different digits


def test_case_clashes_are_exact_despite_the_bloom_filter() -> None:
    rng = random.Random(7)
    keys = list({"".join(rng.choice("aAbB") for _ in range(rng.randint(1, 9))) for _ in range(20_000)})
    finder = CaseClashes(0)  # the smallest filter: many false candidates, which the second pass must sort out
    for k in keys:
        finder.first_pass(k)
    assert finder.need_second_pass
    for k in reversed(keys):
        finder.second_pass(k)
    finder.finish()
    lowered: dict[str, int] = {}
    for k in keys:
        lowered[k.lower()] = lowered.get(k.lower(), 0) + 1
    assert [finder.clashes(k) for k in keys] == [lowered[k.lower()] > 1 for k in keys]
    unique_keys = [f"k{i}" for i in range(5000)]
    finder = CaseClashes(len(unique_keys))
    for k in unique_keys:
        finder.first_pass(k)
    finder.finish()  # a second pass is only needed for candidates; none clash here
    assert not any(finder.clashes(k) for k in unique_keys)
