"""Fixtures for the compatibility suites: one SQLite server per module (these tests are about the HTTP contract,
which is the same on every backend)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

try:
    from tests.conftest import Server, make_server
except ImportError:  # tests/ not importable as a package
    from conftest import Server, make_server  # type: ignore[no-redef]


@pytest.fixture(scope="module")
def compat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = make_server(tmp_path_factory.mktemp("compat"), "sqlite", "--rate-limits", "off")
    yield s
    s.stop()
