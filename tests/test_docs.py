"""The README stays true to the code: every setting and every CLI command is documented there."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from openkvs.cli import main
from openkvs.config import SETTINGS, markdown_table

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_the_readme_configuration_table_is_the_declared_settings() -> None:
    start = README.index("| flag | environment |")
    table = README[start : README.index("\n\n", start) + 1]
    assert table == markdown_table(), "regenerate the README's table with: openkvs settings --markdown"


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
