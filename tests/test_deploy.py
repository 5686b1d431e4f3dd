"""deploy/openkvs.service is a unit systemd accepts, with no directive it ignores (issue 17)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "openkvs.service"


def _verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    # verify wants ExecStart's program to exist: point it at this venv's openkvs
    unit = tmp_path / "openkvs.service"
    unit.write_text(text.replace("/opt/openkvs/bin/openkvs", str(Path(sys.executable).parent / "openkvs")))
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd's tools are not installed")
def test_unit_verifies_without_warnings(tmp_path: Path) -> None:
    text = UNIT.read_text()
    out = _verify(tmp_path, text)
    assert out.returncode == 0, out.stderr
    assert "openkvs.service" not in out.stderr, out.stderr  # systemd warns (rc 0) about what it ignores
    # and the check would see a directive systemd ignores
    assert "openkvs.service" in _verify(tmp_path, text.replace("KillMode=mixed", "KillMode=bogus")).stderr


def test_unit_is_hardened_and_waits_for_open_requests() -> None:
    lines = set(UNIT.read_text().splitlines())
    for needed in ("DynamicUser=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/openkvs", "NoNewPrivileges=yes",
                   "KillMode=mixed", "Environment=OPENKVS_SHUTDOWN_TIMEOUT=60", "TimeoutStopSec=75"):
        assert needed in lines


def test_install_line_installs_from_a_checkout_with_the_lock() -> None:
    # openkvs is not on PyPI: `pip install openkvs` would fetch someone else's package, or nothing (issue 13)
    line = next(li for li in UNIT.read_text().splitlines() if li.startswith("#") and "pip install" in li)
    args = shlex.split(line.split("pip install", 1)[1])
    constraints = args[args.index("-c") + 1] if "-c" in args else None
    assert constraints == "requirements.lock", line  # the versions the tests passed with, as `make run`
    assert (UNIT.parent.parent / constraints).is_file()
    targets = [a for a in args if not a.startswith("-") and a != constraints]
    assert targets == ["."], line  # the checkout itself
    assert (UNIT.parent.parent / "pyproject.toml").is_file()
