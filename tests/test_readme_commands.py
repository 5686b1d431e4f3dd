"""Every `openkvs ...` command line the README and docs/ show (in their shell blocks and inline code) parses as
written: the command exists and takes those options and arguments. The blocks that can run on a laptop are run
for real by tests/cli/test_readme_blocks.py; this catches the ones that can't (a PostgreSQL cluster, a bucket),
such as a switch given a value (`--s3-path-style true`) that `serve` would refuse with "unexpected extra argument"."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from openkvs.cli import main

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def command_lines(text: str) -> list[str]:
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("openkvs "):
                lines.append(line)
    # inline code: `openkvs check --fix`; the usage synopsis (a ```text block, with | and [...]) is not a command
    lines += re.findall(r"`(openkvs [^`|\[\]]+)`", text)
    return lines


def parse(line: str) -> None:
    # $(date +%F) is one word to the shell; the sentence's placeholders (SRC, NAME) are words too
    args = shlex.split(re.sub(r"\$\([^)]*\)", "X", line), comments=True)[1:]
    command: click.Command = main
    name = "openkvs"
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        name = args.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"no command {name!r}"
        command = sub
    # The parser alone, without converting values: a line in prose may leave out an argument, or name a folder
    # that exists only on the reader's machine; what it may not do is use an option the command lacks, or give a
    # word more than the command takes (a value after a switch).
    ctx = click.Context(command, info_name=name)
    _, positional, _ = command.make_parser(ctx).parse_args(args)
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if all(p.nargs >= 0 for p in arguments):
        assert len(positional) <= sum(p.nargs for p in arguments), f"unexpected extra argument(s) {positional}"


CASES = [(doc.name, line) for doc in DOCS for line in command_lines(doc.read_text())]


def test_the_docs_show_commands() -> None:
    # the extraction finds what it should: a silent regex would make the test below pass on nothing
    lines = [line for _, line in CASES]
    assert any(line.startswith("openkvs serve --data-dir /var/lib/openkvs") for line in lines), lines
    assert any(line.startswith("openkvs download '~shots'") for line in lines), lines


@pytest.mark.parametrize(("doc", "line"), CASES, ids=[f"{d}:{line[:60]}" for d, line in CASES])
def test_every_command_line_in_the_docs_parses(doc: str, line: str) -> None:
    try:
        parse(line)
    except (click.UsageError, AssertionError) as e:
        pytest.fail(f"{doc}: {line}\n{e}")
