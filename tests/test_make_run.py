"""`make run` takes every setting of the README's Configuration from its OPENKVS_ variable, as the README says
(`OPENKVS_PORT=8001 make run`, "any setting of Configuration works this way"): its recipe gives `openkvs serve` no
option, since an option wins over its variable (a newcomer's OPENKVS_DATA_DIR was ignored for `--data-dir ./data`)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_make_run_gives_serve_no_option() -> None:
    printed = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    serve = [shlex.split(line) for line in printed.stdout.splitlines() if "openkvs serve" in line]
    assert len(serve) == 1 and serve[0][1:] == ["serve"], printed.stdout
