"""The README's JavaScript example (the official `apify-client` from npm) run as written against a live server: it
prints what its comments say. Node.js and the client come from tests/compat/test_js_client.py's fixture (skipped
with the reason without `node`, except in CI)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from tests.cli.test_readme_blocks import block, live
from tests.compat.test_js_client import need, node_modules  # noqa: F401  (the fixture)


def test_the_readme_js_example_prints_what_it_says(server: Any, tmp_path: Path, node_modules: Path) -> None:  # noqa: F811
    code = live(block("From JavaScript, the official `apify-client`", "js"), server)
    (tmp_path / "try.mjs").write_text(code)
    (tmp_path / "node_modules").symlink_to(node_modules.parent)  # as `npm install apify-client` would leave it
    out = subprocess.run([need("node"), "try.mjs"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    expected = [re.search(r"// (.*)$", line).group(1)  # type: ignore[union-attr]
                for line in code.splitlines() if line.startswith("console.log(")]
    assert out.stdout.splitlines() == expected
