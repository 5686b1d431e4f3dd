"""Fixtures for the compatibility suites: one SQLite server per module (these tests are about the HTTP contract,
which is the same on every backend), and a server of each backend per test for the crawler tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.compat import actors
from tests.compat.actors import ActorRun

try:
    from tests.conftest import Server, make_server
except ImportError:  # tests/ not importable as a package
    from conftest import Server, make_server  # type: ignore[no-redef]


@pytest.fixture(scope="module")
def compat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = make_server(tmp_path_factory.mktemp("compat"), "sqlite", "--rate-limits", "off", in_process=True)
    yield s
    s.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def crawl_server(request: pytest.FixtureRequest, tmp_path: Path, start_server: Callable[..., Server]) -> Server:
    """A server of each backend for a crawl (its own: crawls are checked by their whole log and their counters)."""
    return start_server(tmp_path, request.param, "--rate-limits", "off")


@pytest.fixture
def run_actor(compat_server: Server, tmp_path: Path) -> Callable[..., ActorRun]:
    """``run_actor(script, store_id, dataset_id=None)``: the Actor script run against ``compat_server`` with
    docs/sdk.md's environment (tests/compat/actors.py); its report and the server's request lines."""

    def run(script: str, store_id: str, dataset_id: str | None = None, timeout: float = 180) -> ActorRun:
        return actors.run_actor(compat_server, tmp_path, script, store_id, dataset_id, timeout)

    return run
