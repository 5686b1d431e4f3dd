"""The two tiers of the suite (README, "Development"): ``make test`` runs ``-m "not slow"``, ``make test-all``
everything. A module marked slow as a whole is not collected when the -m expression leaves every slow test out
(tests/conftest.py ``_Module``), and is collected whenever some slow test may be selected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _marked_slow_in_source, _selects_no_slow_test

ROOT = Path(__file__).resolve().parent.parent


class _Config:
    def __init__(self, markexpr: str) -> None:
        self.markexpr = markexpr

    def getoption(self, name: str, default: object = None) -> object:
        assert name == "markexpr"
        return self.markexpr


@pytest.mark.parametrize(
    ("markexpr", "no_slow"),
    [
        ("not slow", True),
        ("(not slow)", True),
        ("not slow and not postgres", True),
        ("postgres and not slow", True),
        ("", False),
        ("slow", False),
        ("not slow or postgres", False),
        ("slow and postgres and not redis", False),
        ("not (postgres and slow)", False),
    ],
)
def test_which_expressions_leave_every_slow_test_out(markexpr: str, no_slow: bool) -> None:
    assert _selects_no_slow_test(_Config(markexpr)) is no_slow  # type: ignore[arg-type]


def _collect(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode in (0, 5), out.stdout + out.stderr  # 5: no tests collected
    return out.stdout


def test_a_slow_module_is_left_out_of_the_quick_tier_and_kept_in_the_whole_suite() -> None:
    module = "tests/compat/test_hostile_fuzz.py"  # pytestmark = pytest.mark.slow
    quick = _collect("-m", "not slow", module)
    assert "::" not in quick and "deselected" not in quick, quick  # not collected at all, not collected and dropped
    whole = [line for line in _collect(module).splitlines() if "::" in line]
    assert len(whole) > 100 and all(item.startswith(module + "::") for item in whole)


@pytest.mark.parametrize(
    ("source", "slow"),
    [
        ("import pytest\npytestmark = pytest.mark.slow  # why\n", True),
        ("pytestmark = [pytest.mark.slow, pytest.mark.server_process, pytest.mark.timeout(600)]\n", True),
        ("pytestmark = (pytest.mark.postgres, pytest.mark.slow)\n", True),
        ("pytestmark = pytest.mark.postgres\n", False),
        ("pytestmark = [pytest.mark.skipif(True, reason='slow')]\n", False),
        ("def helper():\n    pytestmark = pytest.mark.slow\n", False),  # not the module's
        ("pytestmark = pytest.mark.slow(\n", False),  # not Python: left to the import to report
    ],
)
def test_a_module_marked_slow_is_known_from_its_source(tmp_path: Path, source: str, slow: bool) -> None:
    """The quick tier leaves such a module unimported (its imports are the cost: schemathesis, crawlee)."""
    module = tmp_path / "test_module.py"
    module.write_text(source)
    assert _marked_slow_in_source(module) is slow
