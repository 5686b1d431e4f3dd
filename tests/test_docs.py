"""The README stays true to the code: every setting and every CLI command is documented there."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from openkvs.cli import main
from openkvs.config import SETTINGS

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    for s in SETTINGS:
        assert f"| `{s.flag}` | `{s.env}` |" in README, s.flag


def test_every_serve_flag_is_a_setting() -> None:
    serve = main.commands["serve"]
    flags = {opt for p in serve.params for opt in p.opts if opt.startswith("--")}
    assert flags == {s.flag for s in SETTINGS}


def test_every_command_is_in_the_readme() -> None:
    for name, command in main.commands.items():
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for sub in subcommands:
                assert f"openkvs {name} {sub}" in README or f"{name} {sub}" in README, (name, sub)
        else:
            assert f"openkvs {name}" in README, name
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0 and result.output.strip()
