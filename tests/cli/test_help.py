"""``openkvs --help`` as a newcomer reads it (issue 13): its overview names every command, and no command's summary
is cut off mid-sentence ("Back the SQLite data dir up into the new folder DEST,..."), in a terminal of 80 columns;
each group's list of subcommands likewise."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from openkvs.cli import main


def help_text(*args: str) -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OPENKVS_")}, "COLUMNS": "80"}
    out = subprocess.run([sys.executable, "-m", "openkvs", *args, "--help"], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def summaries(text: str) -> dict[str, str]:
    listed = text.split("\nCommands:\n", 1)[1]
    return dict(re.findall(r"^  (\S+)\s+(.+)$", listed, re.M))


def test_overview_names_every_command_and_no_summary_is_cut() -> None:
    text = help_text()
    overview = text.split("\nOptions:\n", 1)[0]
    listed = summaries(text)
    assert set(listed) == set(main.commands)
    for name in main.commands:
        assert re.search(rf"\b{name}\b", overview.split("\n", 2)[2]), f"the overview leaves out {name}"
    cut = {name: line for name, line in listed.items() if line.endswith("...")}
    assert not cut, cut


@pytest.mark.parametrize("group", ["users", "tokens", "grants", "stores", "blobs"])
def test_no_subcommand_summary_is_cut(group: str) -> None:
    listed = summaries(help_text(group))
    assert listed
    cut = {name: line for name, line in listed.items() if line.endswith("...")}
    assert not cut, cut
