"""The README's request-queue block, run as written against a live server (tests/cli/test_readme_blocks.py runs
the other blocks the same way)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

README = (Path(__file__).parent.parent.parent / "README.md").read_text()


def test_the_readme_queue_block_runs(server: Any, tmp_path: Path) -> None:
    start = README.index("## Request queues: one crawler or many")
    m = re.compile(r"```sh\n(.*?)```", re.S).search(README, start)
    assert m is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENKVS_", "APIFY_"))}
    env.update({"TOKEN": server.token, "API": f"{server.url}/v2"})
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", m.group(1)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    answers = [json.loads(line) for line in out.stdout.replace("}{", "}\n{").splitlines() if line.strip()]
    assert answers[1]["data"] == {"requestId": "DxFdsGK3wN0DCxa", "wasAlreadyPresent": False,
                                  "wasAlreadyHandled": False}
    assert [i["id"] for i in answers[2]["data"]["items"]] == ["DxFdsGK3wN0DCxa"]
    assert answers[3]["data"]["totalRequestCount"] == 1 and answers[3]["data"]["pendingRequestCount"] == 1
