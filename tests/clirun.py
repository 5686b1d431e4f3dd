"""`python -m openkvs ARGS` run in this process: the same command (click's ``main``, prog name "openkvs"), its
exit code, stdout and stderr apart, without starting a Python process (about 0.2 s of CPU and more of wall on a
busy machine, per command; the suite ran well over a hundred). For tests of what a command prints and returns;
what only a process shows (signals, a terminal, `serve` starting or refusing to) keeps a real one."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Ran:
    """What subprocess.run(capture_output=True, text=True) gives a test: exit code, stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str


def openkvs_here(*args: str, env: dict[str, str] | None = None, cwd: Path | str | None = None,
                 unset: tuple[str, ...] = ("OPENKVS_",), keep: tuple[str, ...] = ("OPENKVS_TEST_",)) -> Ran:
    """The command with this process's variables named by ``unset`` (prefixes) removed but for ``keep``, then
    ``env`` on top, in ``cwd``, as a clean subprocess would have them. Not from a thread while another command
    runs: os.environ, the working directory and sys.stdout/stderr are the process's. A command that raises
    (a traceback, in a process) fails the test here."""
    from click.testing import CliRunner

    from openkvs.cli import main

    overrides: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith(unset) and not k.startswith(keep)
    }
    overrides.update(env or {})
    with contextlib.chdir(cwd or os.getcwd()):
        result: Any = CliRunner().invoke(main, list(args), env=overrides, prog_name="openkvs", catch_exceptions=False)
    return Ran(result.exit_code, result.stdout, result.stderr)
