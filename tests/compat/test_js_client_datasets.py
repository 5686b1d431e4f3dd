"""The official Apify JS client's dataset methods against openkvs (tests/compat/js/datasets.mjs): get or create,
push one item and an array, list items with paging, desc, fields and clean, download csv/jsonl/xlsx, a signed
public URL, delete. Needs Node.js as tests/compat/test_js_client.py (skipped with the reason outside CI)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from tests.compat.test_js_client import JS_DIR, need, node_modules  # noqa: F401 - the fixture

if TYPE_CHECKING:
    from tests.conftest import Server


def test_js_client_datasets(compat_server: Server, node_modules: Path) -> None:  # noqa: F811
    env = {**os.environ, "OPENKVS_URL": compat_server.url, "OPENKVS_TOKEN": compat_server.token}
    out = subprocess.run(
        [need("node"), "datasets.mjs"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}\nserver log:\n{compat_server.log()[-3000:]}"
    assert "DATASETS OK" in out.stdout
